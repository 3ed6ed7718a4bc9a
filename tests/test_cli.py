"""The `pool` and `plot` verbs through the console script's parser (hyperprag/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperprag.cli import main
from hyperprag.core.data import Document, load_corpus, load_questions

FIXTURES = Path(__file__).parent / "fixtures"


def _questions(tmp_path: Path, n: int) -> Path:
    """n questions, question i with one supporting passage "doc i" and one shared unsupported passage."""
    rows = [{"id": f"q{i}", "question": f"what is {i}?", "answers": [str(i)],
             "passages": [{"title": f"doc {i}", "text": f"Doc {i} says {i}.", "supporting": True},
                          {"title": "shared", "text": "Shared text.", "supporting": False}]} for i in range(n)]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pool_takes_slices_per_file_limits_and_excludes(tmp_path):
    q = _questions(tmp_path, 10)
    out = tmp_path / "pool.jsonl"
    result = main(["pool", f"[{q}@0:6, {FIXTURES / 'questions.jsonl'}]", str(out), "--docs", "[4, 9]",
                   "--exclude", f"[{q}@2:3]"])
    docs = list(load_corpus(out))
    # questions 0-5 of q.jsonl minus question 2's passages, first 4; then the fixture's 3 supporting passages
    assert [d.title for d in docs] == ["doc 0", "doc 1", "doc 3", "doc 4", "Mount Fennick", "Pellham Bridge",
                                       "SS Marigold"]
    assert all(d.id == Document("", d.title, d.text).content_hash for d in docs)
    assert result["per_file"] == {f"{q}@0:6": 4, str(FIXTURES / "questions.jsonl"): 3}
    assert result["excluded_passages"] == 2  # question 2's own passage and the shared one


def test_pool_all_passages_and_one_limit_for_every_file(tmp_path):
    q = _questions(tmp_path, 3)
    out = tmp_path / "pool.jsonl"
    main(["pool", f"[{q}]", str(out), "--gold", "all"])
    assert [d.title for d in load_corpus(out)] == ["doc 0", "shared", "doc 1", "doc 2"]
    main(["pool", f"[{q}, {q}@1:3]", str(out), "--docs", "2"])  # the second file adds only what is new
    assert [d.title for d in load_corpus(out)] == ["doc 0", "doc 1", "doc 2"]
    assert len(list(load_questions(q))) == 3


def test_pool_docs_count_must_match_the_files(tmp_path):
    q = _questions(tmp_path, 3)
    with pytest.raises(ValueError, match="2 numbers for 1 question files"):
        main(["pool", f"[{q}]", str(tmp_path / "p.jsonl"), "--docs", "[1, 2]"])


def test_plot_writes_a_png_beside_the_csv(tmp_path, capsys):
    run = tmp_path / "csv" / "version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,train/param,val/param,val/lm,val/lm_other\n"
                                     "0,4,2.0,,,\n0,9,,1.5,3.0,3.5\n1,14,1.0,,,\n1,19,,0.9,2.5,3.4\n")
    result = main(["plot", str(tmp_path)])
    png = run / "curves.png"
    assert result["png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["summary"]["val/lm"] == {"first": 3.0, "last": 2.5, "last_step": 19}
    assert "val/lm_other" in capsys.readouterr().out
