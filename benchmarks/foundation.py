"""Load time (first and cached), generation tokens/s at batch 1 and 8, retrieval queries/s.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/foundation.py [--model smollm2-135m]

The first load converts the embedded GGUF into a fresh cache folder (a temporary HYPERPRAG_CACHE), so
both figures are measured in this run.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ["HYPERPRAG_CACHE"] = tempfile.mkdtemp(prefix="hyperprag-bench-")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from hyperprag.core.data import Document
    from hyperprag.core.models import timed_load
    from hyperprag.core.prompts import answer_prompt
    from hyperprag.demo import load_demo_corpus, load_demo_questions
    from inference.generate import generate
    from inference.retrieval import build_retriever

    rows = []
    _, _, first = timed_load(args.model)
    model, tok, cached = timed_load(args.model)
    rows += [("load, first (GGUF -> safetensors cache)", f"{first:.2f} s"), ("load, cached", f"{cached:.2f} s")]
    questions = load_demo_questions("train")
    prompts = [answer_prompt(tok, q.question) for q in questions[:8]]
    for batch in (1, 8):
        generate(model, tok, prompts[:batch], max_new_tokens=4, batch_size=batch)  # warm up
        model.generation_config.eos_token_id = None  # time a fixed number of tokens
        start = time.perf_counter()
        generate(model, tok, prompts[:batch], max_new_tokens=args.new_tokens, batch_size=batch)
        seconds = time.perf_counter() - start
        rows.append((f"generation, batch {batch}", f"{batch * args.new_tokens / seconds:.1f} tokens/s"))
    docs = [Document(f"{d.id}-{i}", d.title, d.text) for i in range(50) for d in load_demo_corpus("train")]
    queries = [q.question for q in questions] * 5
    for kind in ("bm25", "dense"):
        start = time.perf_counter()
        retriever = build_retriever(kind, docs)
        built = time.perf_counter() - start
        start = time.perf_counter()
        retriever.search(queries, 3)
        rows.append((f"retrieval {kind}: {len(docs)} docs, build / query",
                     f"{built:.2f} s / {len(queries) / (time.perf_counter() - start):.0f} queries/s"))
    rows.append(("peak RSS", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"))
    width = max(len(r[0]) for r in rows)
    print(f"| {f'what ({args.model})':<{width}} | value |\n|{'-' * (width + 2)}|---|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
