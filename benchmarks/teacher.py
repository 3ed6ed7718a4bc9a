"""Teacher cost: augmentation and training seconds per document, sequential (K=1) vs batched (K=8).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/teacher.py --model smollm2-135m --docs 8 --max-qa 4
    # whole recipes against each other (their own K, QA and epochs), the first is the reference:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/teacher.py --docs 8 \
        --recipes configs/teacher/smollm2-135m.yaml configs/teacher/cpu.yaml

Each mode runs in a fresh process so its peak resident memory (ru_maxrss) is its own. Training uses the
demo documents with rule augmentation; the adapters of the batched run are written to an AdapterStore
to measure bytes per stored adapter. Prints one table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(args: dict, queue) -> None:
    """One mode in a child process: load, augment, train, (store), report."""
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.injection import augment, keep_forms, load_split
    from hyperprag.core.models import load_base_model
    from hyperprag.core.store import AdapterStore
    from training.teacher import TeacherConfig, document_examples, document_plan, train_documents

    torch.set_num_threads(args["threads"]) if args["threads"] else None
    if args.get("recipe"):
        config = TeacherConfig.from_yaml(args["recipe"])
    else:
        config = TeacherConfig.for_model(args["model"], epochs=args["epochs"], docs_per_step=args["k"],
                                         max_qa=args["max_qa"], kinds=tuple(args["kinds"]))
    model, tok = load_base_model(args["model"], dtype=config.dtype)
    docs = load_split("all")[0][: args["docs"]]
    t0 = time.perf_counter()
    augs = augment(docs, "rules")
    if args["forms"]:
        from types import SimpleNamespace

        augs = [SimpleNamespace(qa=keep_forms(a.qa, args["forms"]), rewrites=a.rewrites) for a in augs]
    aug_s = (time.perf_counter() - t0) / len(docs)
    ex = document_examples(tok, docs, augs, config, model)  # with the anchor sequences it trains
    t0 = time.perf_counter()
    adapters = train_documents(model, tok, docs, augs, config)
    train_s = time.perf_counter() - t0
    nbytes = None
    if args["store"]:
        with tempfile.TemporaryDirectory() as tmp:
            store = AdapterStore.create(Path(tmp) / "s", base_model=args["model"], spec=config.spec)
            for d, w in zip(docs, adapters, strict=True):
                store.put(d.id, w, w.meta)
            shard = store.flush()
            nbytes = (shard.stat().st_size + shard.with_suffix(".json").stat().st_size) / len(docs)
    trained = [e[i] for e in ex for step in document_plan(e, config) for i in step]  # every epoch's sequences
    anchor_tokens = sum(len(x.input_ids) for x in trained if x.kind == "anchor") / config.epochs
    queue.put({"k": config.docs_per_step, "recipe": args.get("recipe"), "docs": len(docs),
               "seqs": len(trained) / config.epochs, "epochs": config.epochs, "dtype": config.dtype,
               "tokens": sum(len(x.input_ids) for x in trained) / config.epochs, "anchor_tokens": anchor_tokens,
               "aug_s_per_doc": aug_s,
               "train_s_per_doc": train_s / len(docs), "docs_per_s": len(docs) / train_s,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "bytes_per_adapter": nbytes, "adapter_tensor_bytes": adapters[0].num_bytes()})


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--max-qa", type=int, default=4, help="QA pairs per document (keeps the run short)")
    ap.add_argument("--forms", type=int, default=1, help="QA pairs per distinct answer before --max-qa")
    ap.add_argument("--kinds", nargs="+", default=["qa_closed"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 8], help="docs per step to compare")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--recipes", nargs="+", default=None, metavar="YAML",
                    help="compare these configs/teacher/*.yaml recipes as they are (instead of --ks)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx = mp.get_context("spawn")
    rows = []
    common = {"model": args.model, "docs": args.docs, "max_qa": args.max_qa, "forms": args.forms,
              "kinds": args.kinds, "epochs": args.epochs, "threads": args.threads}
    runs = ([{**common, "recipe": r, "forms": 0, "k": None, "store": False} for r in args.recipes] if args.recipes
            else [{**common, "k": k, "store": k == max(args.ks)} for k in args.ks])
    for run in runs:
        q = ctx.Queue()
        p = ctx.Process(target=_run, args=(run, q))
        p.start()
        rows.append(q.get())
        p.join()
    if args.recipes:
        return recipe_table(rows)
    base = rows[0]["docs_per_s"]
    print(f"\nteacher cost on {args.model}: {args.docs} demo docs, kinds {args.kinds}, {args.max_qa} QA/doc, "
          f"{args.epochs} epoch(s), {rows[0]['seqs']:.0f} sequences / {rows[0]['tokens']:.0f} tokens")
    vs = f"vs K={rows[0]['k']}"
    print(f"{'K':>3} {'augment s/doc':>13} {'train s/doc':>11} {'docs/s':>8} {vs:>7} {'peak RSS MB':>11} "
          f"{'bytes/adapter':>13}")
    for r in rows:
        stored = f"{r['bytes_per_adapter']:.0f}" if r["bytes_per_adapter"] else "-"
        print(f"{r['k']:>3} {r['aug_s_per_doc']:13.4f} {r['train_s_per_doc']:11.2f} {r['docs_per_s']:8.3f} "
              f"{r['docs_per_s'] / base:7.2f} {r['peak_rss_mb']:11.0f} {stored:>13}")
    print(f"adapter tensors: {rows[0]['adapter_tensor_bytes']} bytes (float32)")
    return rows


def recipe_table(rows: list[dict]) -> list[dict]:
    """Print whole recipes side by side; the speed-up is against the first recipe, measured in this run."""
    base = rows[0]["train_s_per_doc"]
    print(f"\n{'recipe':<44} {'K':>2} {'dtype':>8} {'epochs':>6} {'seqs/doc':>8} {'tokens/epoch':>12} {'anchor share':>12} "
          f"{'train s/doc':>11} {'speed-up':>8}")
    for r in rows:
        print(f"{r['recipe']:<44} {r['k']:>2} {r['dtype']:>8} {r['epochs']:>6} {r['seqs'] / r['docs']:8.1f} "
              f"{r['tokens'] / r['docs']:12.0f} {r['anchor_tokens'] / r['tokens']:12.2f} "
              f"{r['train_s_per_doc']:11.2f} {base / r['train_s_per_doc']:8.2f}")
    return rows


if __name__ == "__main__":
    main()
