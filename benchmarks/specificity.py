"""Does a generated adapter carry its own document? The key-value specificity benchmark.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/specificity.py --out runs/specificity \
        --arm configs/hypernet/keyvalue.yaml --arm configs/hypernet/keyvalue_pooled.yaml

Key-value documents (hyperprag/demo/keyvalue.py) hold codes, numbers, invented villages, keepers and
passwords that nothing but the document itself can supply. Steps, each resumable:

1. data: `--train_docs` documents for training (seed 0) and `--test_docs` never trained on (seed 1, no
   name shared with the training set) with their questions, in OUT/data/{train,test}/.
2. every arm (a `hyperprag train` config): trained on OUT/data/train (the config's data paths are
   overridden) into OUT/<arm>/, unless OUT/<arm>/hypernet exists.
3. every arm on the test documents: their adapters generated in one batched pass, then closed-book answers
   with the document's own adapter, another document's and none, and the passage in context (rag): gold
   answer loss per token, EM and answer-contained, on the same questions.

Writes OUT/result.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyperprag.core.data import load_corpus, load_questions, write_jsonl  # noqa: E402
from hyperprag.core.io import atomic_write_json, atomic_write_text  # noqa: E402
from hyperprag.demo.keyvalue import generate_keyvalue  # noqa: E402


def write_data(out: Path, train_docs: int, test_docs: int) -> tuple[Path, Path]:
    """OUT/data/train and OUT/data/test (corpus.jsonl + questions.jsonl), test names disjoint from train."""
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    if not (train_dir / "questions.jsonl").exists():
        docs, qs = generate_keyvalue(train_docs, seed=0)
        write_jsonl(train_dir / "corpus.jsonl", docs)
        write_jsonl(train_dir / "questions.jsonl", qs)
    if not (test_dir / "questions.jsonl").exists():
        seen = {d.title for d in load_corpus(train_dir / "corpus.jsonl")}
        docs, qs = generate_keyvalue(test_docs + test_docs // 4 + 10, seed=1)
        docs = [d for d in docs if d.title not in seen][:test_docs]
        hashes = {d.content_hash for d in docs}
        write_jsonl(test_dir / "corpus.jsonl", docs)
        write_jsonl(test_dir / "questions.jsonl", [q for q in qs if q.passages[0].content_hash in hashes])
    return train_dir, test_dir


def train_arm(config: Path, run_dir: Path, train_dir: Path, extra: list[str]) -> tuple[Path, dict]:
    """Fit one arm with `hyperprag train` (LightningCLI) on the training documents; the exported folder and
    the fit's wall time per optimizer step (read back from its log when it was trained earlier)."""
    from training.hypernet_cli import run_train

    hypernet = run_dir / "hypernet"
    timing_file = run_dir / "timing.json"
    if not (hypernet / "config.json").exists():
        args = ["--config", str(config), "--trainer.default_root_dir", str(run_dir),
                "--trainer.logger.init_args.save_dir", str(run_dir),
                "--data.corpus", str(train_dir / "corpus.jsonl"),
                "--data.questions", json.dumps([str(train_dir / "questions.jsonl")]), *extra]
        if (run_dir / "checkpoints" / "last.ckpt").exists():
            args += ["--ckpt_path", "last"]  # a killed fit resumes
        start = time.perf_counter()
        run_train(args)
        from hypernet.checkpoint import read_config

        steps = read_config(hypernet)["meta"].get("trained_steps") or 1
        atomic_write_json(timing_file, {"fit_seconds": time.perf_counter() - start, "steps": steps})
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    return hypernet, timing


def evaluate_arm(name: str, hypernet: Path, test_dir: Path, out: Path, base, tok, batch_size: int) -> dict:
    """Generated adapters of the test documents: own / other / none closed-book, and rag, same questions."""
    from hyperprag.core.store import AdapterStore
    from hyperprag.pipeline import specificity_check
    from inference.answer import Answerer
    from inference.evaluate import evaluate
    from inference.generate import answer_nll, generate
    from inference.parameterize import parameterize_corpus

    docs = list(load_corpus(test_dir / "corpus.jsonl"))
    questions = list(load_questions(test_dir / "questions.jsonl"))
    stats = parameterize_corpus(hypernet, docs, out / name / "test-store", base, tok, progress=False)
    store = AdapterStore.open(out / name / "test-store")
    store.preload()
    answerer = Answerer(base, tok, {d.id: d for d in docs}, hyper=store, top_k=1, batch_size=batch_size,
                        max_new_tokens=16, retrieval="gold")
    metrics = evaluate(answerer, questions, ["vanilla", "rag", "hyper"], out / name / "eval", batch_size=batch_size,
                       with_nll=True, progress=False)
    check = specificity_check(base, tok, questions, {d.id: d for d in docs}, store, batch_size, answer_nll, generate,
                              known={"none": metrics["vanilla"]["all"], "own document": metrics["hyper"]["all"]})
    rows = {"passage in context (rag)": {k: metrics["rag"]["all"][k] for k in ("answer_nll", "em", "contains", "n")},
            **check}
    return {"rows": rows, "parameterize": stats}


def format_table(results: dict) -> str:
    lines = ["| arm | adapter | answer_nll | em | contains | n |", "|---|---|---|---|---|---|"]
    for arm, res in results.items():
        for row, v in res["rows"].items():
            lines.append(f"| {arm} | {row} | {v['answer_nll']:.3f} | {v['em']:.3f} | {v['contains']:.3f} | {v['n']} |")
    lines += ["", "| arm | own - other answer loss (nats/token) | own EM | fit s/step | steps |", "|---|---|---|---|---|"]
    for arm, res in results.items():
        r = res["rows"]
        gap = r["other document"]["answer_nll"] - r["own document"]["answer_nll"]
        t = res.get("timing", {})
        per_step = t["fit_seconds"] / t["steps"] if t.get("steps") else float("nan")
        lines.append(f"| {arm} | {gap:.3f} | {r['own document']['em']:.3f} | {per_step:.1f} | {t.get('steps', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/specificity", help="results folder (data, runs, table)")
    p.add_argument("--arm", action="append", required=True, help="a `hyperprag train` config (repeat)")
    p.add_argument("--train_docs", type=int, default=3000)
    p.add_argument("--test_docs", type=int, default=200)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--set", action="append", default=[], help="extra `hyperprag train` argument for every arm, "
                   "e.g. --set=--trainer.max_steps=400")
    a = p.parse_args(argv)
    import torch

    from hyperprag.core.models import load_base_model

    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    train_dir, test_dir = write_data(out, a.train_docs, a.test_docs)
    base, tok = load_base_model(a.model)
    results = {}
    for config in map(Path, a.arm):
        name = config.stem
        hypernet, timing = train_arm(config, out / name, train_dir, a.set)
        results[name] = evaluate_arm(name, hypernet, test_dir, out, base, tok, a.batch_size)
        results[name]["timing"] = timing
        atomic_write_json(out / "result.json", results)
    table = format_table(results)
    atomic_write_text(out / "table.md", table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
