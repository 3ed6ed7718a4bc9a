"""Resumable evaluation: predictions per mode as JSONL, metrics as JSON, a readable table.

A killed run continues where it stopped: questions already in ``predictions/<mode>.jsonl`` are skipped,
and metrics are recomputed from the predictions file, so a resumed run's metrics equal an
uninterrupted one's.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from hyperprag.core.data import Question
from hyperprag.core.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl_records
from hyperprag.core.metrics import score
from inference.answer import Answerer
from inference.retrieval import recall_at_k

log = logging.getLogger(__name__)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def aggregate(records: list[dict], questions: dict[str, Question]) -> dict:
    """Metrics for one mode: overall, per dataset and per dataset/type."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        q = questions[rec["id"]]
        groups["all"].append(rec)
        groups[q.dataset or "-"].append(rec)
        if q.type:
            groups[f"{q.dataset or '-'}/{q.type}"].append(rec)
    out = {}
    for name, recs in groups.items():
        metric_names = sorted({k for r in recs for k in r["scores"]})
        row = {m: _mean([r["scores"][m] for r in recs if m in r["scores"]]) for m in metric_names}
        row["n"] = len(recs)
        row["seconds_per_question"] = _mean([r["seconds"] for r in recs])
        row["prompt_tokens"] = _mean([r["prompt_tokens"] for r in recs])
        nll = [r["answer_nll"] for r in recs if r.get("answer_nll") is not None]
        if nll:
            row["answer_nll"] = _mean(nll)
        out[name] = row
    return out


def format_table(metrics: dict[str, dict], group: str = "all") -> str:
    """A markdown table with one row per mode for `group` (e.g. "all" or a dataset name); `recall` is the
    fraction of the question's supporting passages among the documents the mode retrieved (recall@top_k)."""
    cols = ["em", "f1", "acc", "contains", "recall", "answer_nll", "seconds_per_question", "prompt_tokens", "n"]
    present = [c for c in cols if any(c in m.get(group, {}) for m in metrics.values())]
    lines = ["| mode | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for mode, m in metrics.items():
        row = m.get(group, {})
        cells = []
        for c in present:
            v = row.get(c)
            cells.append("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saved_metrics(out_dir: str | Path, mode: str, questions: Sequence[Question]) -> dict:
    """One mode's metrics over `questions` from the predictions an `evaluate` run saved in `out_dir` (e.g. every
    mode on the subset one of them answered); a question without a saved prediction is left out."""
    by_id = {q.id: q for q in questions}
    records = [r for r in read_jsonl_records(Path(out_dir) / "predictions" / f"{mode}.jsonl") if r["id"] in by_id]
    return aggregate(records, by_id)


def evaluate(answerer: Answerer, questions: Sequence[Question], modes: Sequence[str], out_dir: str | Path,
             batch_size: int = 8, with_nll: bool | Collection[str] = False, progress: bool = True,
             subsets: Mapping[str, Sequence[Question]] | None = None) -> dict[str, dict]:
    """Answer `questions` in every mode, appending predictions as they finish; returns metrics per mode.

    `with_nll` also measures the gold-answer loss: True for every mode, or the modes to measure it in (a
    teacher-forced pass as long as the prompt, so leaving out the in-context modes saves most of its cost).
    `subsets` maps a mode to the part of `questions` it answers instead (e.g. prag only where teacher LoRAs
    exist); metrics.json and metrics.md hold every mode of the call.
    """
    out_dir = Path(out_dir)
    by_id = {q.id: q for q in questions}
    if len(by_id) != len(questions):
        raise ValueError("question ids must be unique")
    answerer.check_modes(modes)
    subsets = subsets or {}
    nll_modes = set(modes) if with_nll is True else set(with_nll or ())
    all_metrics: dict[str, dict] = {}
    for mode in modes:
        asked = subsets.get(mode, questions)
        path = out_dir / "predictions" / f"{mode}.jsonl"
        done = {r["id"] for r in read_jsonl_records(path)}
        todo = [q for q in asked if q.id not in done]
        if done:
            log.info("%s: %d of %d questions already answered, resuming", mode, len(done), len(questions))
        with tqdm(total=len(asked), initial=len(asked) - len(todo), desc=f"eval {mode}", disable=not progress,
                  unit="q", dynamic_ncols=True) as bar:  # closed (the line ended) even when answering fails
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                preds = answerer.answer(batch, mode, with_nll=mode in nll_modes)
                recs = []
                for p in preds:
                    rec = asdict(p)
                    rec["scores"] = score(p.prediction, by_id[p.id])
                    gold_docs = answerer.supporting(by_id[p.id])
                    if p.doc_ids and gold_docs:  # retrieval quality of the documents this mode used
                        rec["scores"]["recall"] = recall_at_k(p.doc_ids, gold_docs)
                    rec["gold"] = by_id[p.id].answers
                    recs.append(rec)
                append_jsonl(path, recs)
                bar.update(len(batch))
        all_metrics[mode] = saved_metrics(out_dir, mode, asked)
    atomic_write_json(out_dir / "metrics.json", all_metrics)
    groups = sorted({g for m in all_metrics.values() for g in m}, key=lambda g: (g != "all", g))
    atomic_write_text(out_dir / "metrics.md", "\n\n".join(f"### {g}\n\n{format_table(all_metrics, g)}"
                                                          for g in groups) + "\n")
    return all_metrics
