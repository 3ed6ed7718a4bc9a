"""Loss curves of a hypernetwork run from Lightning's CSVLogger (`metrics.csv`) as one PNG and a summary.

Three panels: the parameter loss (training and validation, log scale); the validation answer loss with each
held-out document's own generated adapter, another document's, the teacher's and none (the own-vs-other
gap is what shows generated adapters carry their document); closed-book exact match with each.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

# (column in metrics.csv, legend label) per panel
PARAM = (("train/param", "train"), ("val/param", "validation"))
ANSWER_LOSS = (("val/lm", "own generated"), ("val/lm_other", "other generated"), ("val/lm_teacher", "teacher"),
               ("val/lm_none", "no adapter"))
EXACT_MATCH = (("val/em_hyper", "generated"), ("val/em_teacher", "teacher"), ("val/em_none", "no adapter"))


def find_metrics_csv(path: str | Path) -> Path:
    """`path` itself if it is a file, else the newest metrics.csv below it (CSVLogger's version_N folders)."""
    p = Path(path)
    if p.is_file():
        return p
    found = sorted(p.rglob("metrics.csv"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{p}: no metrics.csv below it (train with a CSVLogger, see "
                                "configs/hypernet/csv_logger.yaml)")
    return found[-1]


def read_series(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric column as (step, value) points, skipping the empty cells of other rows."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                v = float(value)
                if math.isfinite(v):
                    series.setdefault(key, []).append((step, v))
    return series


def summarize(series: dict[str, list[tuple[int, float]]]) -> dict[str, dict[str, float]]:
    """First and last value of each validation metric (and the training parameter loss)."""
    keys = [k for k in series if k.startswith("val/")] + [k for k, _ in PARAM if k in series]
    return {k: {"first": series[k][0][1], "last": series[k][-1][1], "last_step": series[k][-1][0]}
            for k in dict.fromkeys(keys)}


def plot_curves(metrics: str | Path, out: str | Path, title: str | None = None) -> dict:
    """Write the three-panel PNG for a run's metrics.csv (or the folder holding it); returns the summary."""
    from hyperprag.core.plotting import pyplot, save_png

    path = find_metrics_csv(metrics)
    series = read_series(path)
    if not any(k in series for k, _ in PARAM + ANSWER_LOSS):
        raise ValueError(f"{path}: none of the hypernetwork metrics ({PARAM[0][0]}, {ANSWER_LOSS[0][0]}, ...)")
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = ((PARAM, "parameter loss (ΔW or coordinate)", True), (ANSWER_LOSS, "held-out answer loss", False),
              (EXACT_MATCH, "held-out closed-book EM", False))
    for ax, (columns, name, log_y) in zip(axes, panels, strict=True):
        for key, label in columns:
            points = series.get(key)
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o" if key.startswith("val/") else None, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        if log_y and any(series.get(k) for k, _ in columns):
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title or str(path.parent))
    fig.tight_layout()
    save_png(fig, out)
    return {"metrics_csv": str(path), "png": str(out), "summary": summarize(series)}
