"""Reading Lightning CSV logs and plotting a run's curves (training/curves.py)."""

from __future__ import annotations

import os

import pytest

from training.curves import find_metrics_csv, plot_curves, read_series, summarize


def _csv(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_series_skip_blank_and_non_finite_cells(tmp_path):
    f = _csv(tmp_path / "metrics.csv", "epoch,step,train/param,val/lm,val/em_hyper\n0,4,2.5,,\n0,9,nan,3.0,0.25\n"
                                       "1,14,1.5,,\n1,19,,2.0,0.5\n")
    series = read_series(f)
    assert series == {"train/param": [(4, 2.5), (14, 1.5)], "val/lm": [(9, 3.0), (19, 2.0)],
                      "val/em_hyper": [(9, 0.25), (19, 0.5)]}
    summary = summarize(series)
    assert summary["val/lm"] == {"first": 3.0, "last": 2.0, "last_step": 19}
    assert summary["train/param"]["last"] == 1.5 and list(summary)[:2] == ["val/lm", "val/em_hyper"]


def test_find_metrics_csv_takes_the_newest_version(tmp_path):
    old = _csv(tmp_path / "csv" / "version_0" / "metrics.csv", "step,val/lm\n1,2.0\n")
    new = _csv(tmp_path / "csv" / "version_1" / "metrics.csv", "step,val/lm\n1,1.0\n")
    os.utime(old, (1, 1))
    assert find_metrics_csv(tmp_path) == new
    assert find_metrics_csv(old) == old
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        find_metrics_csv(tmp_path / "csv" / "empty")


def test_plot_rejects_a_csv_without_hypernetwork_metrics(tmp_path):
    f = _csv(tmp_path / "metrics.csv", "step,lr-AdamW\n1,0.001\n")
    with pytest.raises(ValueError, match="none of the hypernetwork metrics"):
        plot_curves(f, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
