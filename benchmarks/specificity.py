"""Does a generated adapter carry its own document? The key-value specificity benchmark.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/specificity.py --out runs/specificity \
        --arm configs/hypernet/keyvalue_perceiver.yaml --arm configs/hypernet/keyvalue_pooled.yaml
    # any trained hypernetwork, on other document sets (folders with corpus.jsonl + questions.jsonl):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/specificity.py --out runs/specificity-demo \
        --hypernet shipped=hyperprag/demo/checkpoints/smollm2-135m --eval hyperprag/demo/unseen

Key-value documents (hyperprag/demo/keyvalue.py) hold codes, numbers, invented villages, keepers and
passwords that nothing but the document itself can supply. Steps, each resumable:

1. data: `--train_docs` documents for training (seed 0) and `--test_docs` never trained on (seed 1, no
   name shared with the training set) with their questions, in OUT/data/{train,test}/.
2. every arm (a `hyperprag train` config): trained on OUT/data/train (the config's data paths are
   overridden) into OUT/<arm>/, unless OUT/<arm>/hypernet exists.
3. every arm (and every --hypernet) on the test documents (and every --eval set): their adapters generated
   in one batched pass, then closed-book answers with the document's own adapter, another document's and
   none, and the passage in context (rag): gold answer loss per token, EM and answer-contained, on the same
   questions; and the mean cosine between different documents' generated updates (without the
   document-independent bias slots).

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

from hyperprag.core.data import load_corpus, load_questions  # noqa: E402
from hyperprag.core.io import atomic_write_json, atomic_write_text  # noqa: E402
from hyperprag.demo.keyvalue import generate_keyvalue  # noqa: E402
from hyperprag.demo.synth import write_documents  # noqa: E402


def write_data(out: Path, train_docs: int, test_docs: int) -> tuple[Path, Path]:
    """OUT/data/train and OUT/data/test (corpus.jsonl + questions.jsonl), test names disjoint from train."""
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    if not (train_dir / "questions.jsonl").exists():
        write_documents(train_dir, *generate_keyvalue(train_docs, seed=0))
    if not (test_dir / "questions.jsonl").exists():
        seen = {d.title for d in load_corpus(train_dir / "corpus.jsonl")}
        docs, qs = generate_keyvalue(test_docs + test_docs // 4 + 10, seed=1)
        docs = [d for d in docs if d.title not in seen][:test_docs]
        hashes = {d.content_hash for d in docs}
        write_documents(test_dir, docs, [q for q in qs if q.passages[0].content_hash in hashes])
    return train_dir, test_dir


def train_arm(config: Path, run_dir: Path, train_dir: Path, extra: list[str]) -> tuple[Path, dict]:
    """Fit one arm with `hyperprag train` (LightningCLI) on the training documents; the exported folder and
    the fit's wall time over the steps this process trained (read back when it was trained earlier)."""
    from training.hypernet_cli import run_train

    hypernet = run_dir / "hypernet"
    timing_file = run_dir / "timing.json"
    if not (hypernet / "config.json").exists():
        args = ["--config", str(config), "--trainer.default_root_dir", str(run_dir),
                "--trainer.logger.init_args.save_dir", str(run_dir),
                "--data.corpus", str(train_dir / "corpus.jsonl"),
                "--data.questions", json.dumps([str(train_dir / "questions.jsonl")]), *extra]
        resumed_at = 0
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.exists():  # a killed fit resumes; Lightning loads this same file of the run's own
            import torch

            resumed_at = int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])
            args += ["--ckpt_path", "last"]
        start = time.perf_counter()
        run_train(args)
        from hypernet.checkpoint import read_config

        steps = read_config(hypernet)["meta"].get("trained_steps") or 1
        atomic_write_json(timing_file, {"fit_seconds": time.perf_counter() - start, "steps": steps,
                                        "timed_steps": max(1, steps - resumed_at)})
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    return hypernet, timing


def evaluate_arm(name: str, hypernet: Path, eval_dir: Path, out: Path, base, tok, batch_size: int) -> dict:
    """Generated adapters of a document set: own / other / none closed-book, and rag, same questions."""
    from hypernet.checkpoint import read_config
    from hypernet.config import TOKEN_ARCHS
    from hypernet.losses import deltaw_cosine, mean_offdiag
    from hypernet.token_model import generated_part
    from hyperprag.core.lora import LoraWeights
    from hyperprag.core.store import AdapterStore
    from inference.answer import make_answerer
    from inference.checks import specificity_check
    from inference.evaluate import evaluate
    from inference.parameterize import parameterize_corpus
    from inference.sources import StoreSource

    docs = list(load_corpus(eval_dir / "corpus.jsonl"))
    questions = list(load_questions(eval_dir / "questions.jsonl"))
    run = out / name / eval_dir.name
    stats = parameterize_corpus(hypernet, docs, run / "store", base, tok, progress=False)
    store = AdapterStore.open(run / "store")
    store.preload()
    answerer = make_answerer(base, tok, docs, retriever="gold", top_k=1, hyper=store, batch_size=batch_size,
                             max_new_tokens=16)
    metrics = evaluate(answerer, questions, ["vanilla", "rag", "hyper"], run / "eval", batch_size=batch_size,
                       with_nll=True, progress=False)
    check = specificity_check(base, tok, questions, {d.id: d for d in docs}, StoreSource(store), batch_size,
                              known={"none": metrics["vanilla"]["all"], "own document": metrics["hyper"]["all"]})
    rows = {"passage in context (rag)": {k: metrics["rag"]["all"][k] for k in ("answer_nll", "em", "contains", "n")},
            **check}
    config = read_config(hypernet)["hypernet"]
    bias_rank = config.get("bias_rank", 0) if config["arch"] in TOKEN_ARCHS else 0
    sample = LoraWeights.stack([store.get(d.id) for d in docs[:64]])
    cosine = float(mean_offdiag(deltaw_cosine(generated_part(sample, bias_rank) if bias_rank else sample)))
    return {"rows": rows, "parameterize": stats, "cosine": cosine, "documents": len(docs)}


def format_table(results: dict) -> str:
    lines = ["| hypernetwork | documents | adapter | answer_nll | em | contains | n |", "|---|---|---|---|---|---|---|"]
    for (arm, data), res in results.items():
        for row, v in res["rows"].items():
            lines.append(f"| {arm} | {data} | {row} | {v['answer_nll']:.3f} | {v['em']:.3f} | {v['contains']:.3f} "
                         f"| {v['n']} |")
    lines += ["", "| hypernetwork | documents | other - own answer loss (nats/token) | own EM | cosine across "
              "documents | fit s/step | steps |", "|---|---|---|---|---|---|---|"]
    for (arm, data), res in results.items():
        r = res["rows"]
        gap = r["other document"]["answer_nll"] - r["own document"]["answer_nll"]
        t = res.get("timing") or {}
        per_step = f"{t['fit_seconds'] / t.get('timed_steps', t['steps']):.1f}" if t.get("steps") else "-"
        lines.append(f"| {arm} | {data} | {gap:.3f} | {r['own document']['em']:.3f} | {res['cosine']:.3f} | "
                     f"{per_step} | {t.get('steps', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/specificity", help="results folder (data, runs, table)")
    p.add_argument("--arm", action="append", default=[], help="a `hyperprag train` config to fit and test (repeat)")
    p.add_argument("--hypernet", action="append", default=[], help="NAME=FOLDER: a trained hypernetwork to test")
    p.add_argument("--eval", action="append", default=[], help="a folder with corpus.jsonl + questions.jsonl "
                   "(repeat; default: the key-value test documents)")
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
    eval_dirs = [Path(e) for e in a.eval] or [test_dir]
    base, tok = load_base_model(a.model)
    nets = {}
    for config in map(Path, a.arm):
        nets[config.stem] = train_arm(config, out / config.stem, train_dir, a.set)
    for item in a.hypernet:
        name, _, folder = item.partition("=")
        nets[name] = (Path(folder), {})
    results: dict = {}
    for name, (hypernet, timing) in nets.items():
        for eval_dir in eval_dirs:
            results[(name, eval_dir.name)] = {**evaluate_arm(name, hypernet, eval_dir, out, base, tok, a.batch_size),
                                              "timing": timing}
            atomic_write_json(out / "result.json", {f"{k[0]} on {k[1]}": v for k, v in results.items()})
    table = format_table(results)
    atomic_write_text(out / "table.md", table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
