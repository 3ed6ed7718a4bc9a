# HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/shared_eval.py [--per-dataset 50] [--modes vanilla rag]
# prag rows: ... --modes vanilla rag prag prag-combine --retrievers bm25 --teach
"""Vanilla / rag (BM25 and dense top-3) EM/F1 and recall@3 on the shared HotpotQA, PopQA and 2Wiki sets.

One process, one model load; each (dataset, retriever) cell is a resumable `evaluate` run under
``--out/<dataset>-<retriever>`` (vanilla does not retrieve, so it runs once per dataset). Questions:
HotpotQA test rows 0..n/2-1 (bridge) and 250..250+n/2-1 (comparison); PopQA and 2Wiki rows 0..n-1.
Retrieval corpus: the pooled passages of the whole question file (HotpotQA, PopQA) or 2Wiki's corpus file.
Prag modes need a teacher store holding the retrieved documents: ``--store`` (from ``hyperprag teach``),
or ``--teach`` trains them here first, only the documents the questions retrieve (resumable: rerun to go on).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

DATASETS = {  # name: (question file, corpus file or None, question rows)
    "hotpotqa": ("hotpotqa/test.jsonl", None, lambda n: [*range(n // 2), *range(250, 250 + n - n // 2)]),
    "popqa": ("popqa/questions.jsonl", None, lambda n: list(range(n))),
    "2wikimultihopqa": ("2wikimultihopqa/questions.jsonl", "2wikimultihopqa/corpus.jsonl", lambda n: list(range(n))),
}


def teacher_for(answerer, qs, args, tag: str):
    """The teacher store, after training (with --teach, resumably) LoRAs for every document `qs` retrieve."""
    from hyperprag.core.data import write_jsonl
    from hyperprag.core.store import AdapterStore
    from training.teacher import TeacherConfig, train_corpus

    store = Path(args.store or Path(args.out) / "teacher")
    if args.teach:
        needed = list(dict.fromkeys(i for ids in answerer.documents_for(qs) for i in ids))
        corpus = Path(args.out) / f"teacher-docs-{tag}.jsonl"
        corpus.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(corpus, [{"id": i, "title": answerer.corpus[i].title, "text": answerer.corpus[i].text}
                             for i in needed])
        config = TeacherConfig.from_yaml(args.teacher_config) if args.teacher_config else None  # None: the model's default recipe
        summary = train_corpus(args.model, corpus, store, config=config, augment_cache=Path(args.out) / "augment",
                               progress=False)
        print(f"{tag}: {len(needed)} retrieved documents, {summary['trained']} trained now "
              f"({summary['seconds']:.0f} s), {summary['skipped_existing']} already in {store}", flush=True)
    return AdapterStore.open(store, expect_base_model=args.model)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the teacher's progress lines
    default = os.environ.get("HYPERPRAG_SHARED_DATA", str(Path(__file__).resolve().parents[1] / "../shared/data"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default, help="the shared data folder")
    ap.add_argument("--per-dataset", type=int, default=50, help="questions per dataset")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--retrievers", nargs="+", default=["bm25", "dense"], choices=["bm25", "dense", "gold"])
    ap.add_argument("--modes", nargs="+", default=["vanilla", "rag"])
    ap.add_argument("--store", default=None, help="teacher adapter store for prag modes (default <out>/teacher)")
    ap.add_argument("--teach", action="store_true",
                    help="first train teacher LoRAs (the model's default settings) for the retrieved documents")
    ap.add_argument("--teacher-config", default=None,
                    help="teacher recipe YAML for --teach, e.g. configs/teacher/smollm2-135m-fast.yaml (default: the model's)")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="runs/shared_eval")
    args = ap.parse_args()

    from hyperprag.core.models import load_base_model
    from hyperprag.session import build_answerer, load_eval_inputs
    from inference.evaluate import evaluate

    loaded = load_base_model(args.model)
    rows = []
    for name in args.datasets:
        qfile, cfile, pick = DATASETS[name]
        qs, docs = load_eval_inputs(str(Path(args.data) / qfile), cfile and str(Path(args.data) / cfile))
        qs = [qs[i] for i in pick(args.per_dataset)]
        for r_i, kind in enumerate(args.retrievers):
            modes = [m for m in args.modes if m != "vanilla" or r_i == 0]
            start = time.perf_counter()
            answerer = build_answerer(docs, model=args.model, retriever=kind, top_k=args.top_k, loaded=loaded)
            if any(m.startswith("prag") for m in modes):
                answerer.teacher = teacher_for(answerer, qs, args, f"{name}-{kind}")
            metrics = evaluate(answerer, qs, modes, Path(args.out) / f"{name}-{kind}", progress=False)
            print(f"{name} {kind}: {time.perf_counter() - start:.0f} s", flush=True)
            for mode, m in metrics.items():
                rows.append({"dataset": name, "retriever": "-" if mode == "vanilla" else kind, "mode": mode,
                             **{k: m["all"].get(k) for k in ("em", "f1", "recall", "seconds_per_question", "n")}})
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{args.model}, top-{args.top_k}, {args.per_dataset} questions per dataset\n")
    print("| dataset | mode | retriever | EM | F1 | recall@k | s/question | n |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        recall = "-" if r["recall"] is None else f"{r['recall']:.3f}"
        print(f"| {r['dataset']} | {r['mode']} | {r['retriever']} | {r['em']:.3f} | {r['f1']:.3f} | {recall} | "
              f"{r['seconds_per_question']:.2f} | {r['n']} |")


if __name__ == "__main__":
    main()
