# .venv/bin/python benchmarks/retrieval.py [--data ../shared/data] [--queries 500] [--k 3] [--kinds bm25 dense]
"""Loader speed and retrieval throughput / recall@k on 2WikiMultihopQA (6119-doc corpus), as a table."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from hyperprag.core.data import corpus_index, load_corpus, load_questions, supporting_ids
from inference.retrieval import build_retriever, recall_at_k


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main() -> None:
    default = os.environ.get("HYPERPRAG_SHARED_DATA", str(Path(__file__).resolve().parents[1] / "../shared/data"))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=default, help="the shared data folder")
    ap.add_argument("--queries", type=int, default=500, help="questions used as queries")
    ap.add_argument("--k", type=int, default=3, help="top-k")
    ap.add_argument("--kinds", nargs="+", default=["bm25", "dense"], help="retrievers to time")
    args = ap.parse_args()
    root = Path(args.data) / "2wikimultihopqa"

    docs, t_corpus = timed(load_corpus, root / "corpus.jsonl")
    qs, t_questions = timed(load_questions, root / "questions.jsonl")
    print("| file | records | load seconds |\n|---|---|---|")
    print(f"| 2wikimultihopqa/corpus.jsonl (load_corpus) | {len(docs)} | {t_corpus:.3f} |")
    print(f"| 2wikimultihopqa/questions.jsonl (load_questions) | {len(qs)} | {t_questions:.3f} |\n")

    qs = list(qs)[: args.queries]
    index = corpus_index(docs)
    gold = [supporting_ids(q, index) for q in qs]
    queries = [q.question for q in qs]
    print(f"| retriever | docs | queries | build s | search s | queries/s | recall@{args.k} |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        if kind == "dense":  # load the encoder outside the timings (cached per process afterwards)
            from hyperprag.core.embedders import load_sentence_encoder

            load_sentence_encoder()
        retriever, t_build = timed(build_retriever, kind, docs)
        retriever.search(queries[:8], args.k)  # warm-up
        hits, t_search = timed(retriever.search, queries, args.k)
        recall = statistics.mean(recall_at_k(h, g) for h, g in zip(hits, gold, strict=True) if g)
        print(f"| {kind} | {len(docs)} | {len(queries)} | {t_build:.1f} | {t_search:.2f} | "
              f"{len(queries) / t_search:.0f} | {recall:.3f} |")


if __name__ == "__main__":
    main()
