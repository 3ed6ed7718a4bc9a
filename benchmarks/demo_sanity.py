"""Check the demo questions on the real base model: closed-book vs. with the question's own passage.

The demo subjects are invented, so closed-book answers should be near 0 and the passage should help a lot;
the general-knowledge questions should be answered closed-book. Prints answer-contained rate, exact match
and token F1 (hyperprag.core.metrics, on the short answer extracted from each generation).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/demo_sanity.py --threads 1 [--show-misses]

Measured (SmolLM2-135M-Instruct, CPU, greedy, 20 new tokens, batch 16), contains / EM / F1 in %:
    train   closed-book  80 q    0.0 /  0.0 /  3.7      train   passage  96.2 / 30.0 / 54.3
    unseen  closed-book  40 q    0.0 /  0.0 /  3.1      unseen  passage  90.0 / 22.5 / 48.6
    general closed-book  12 q  100.0 / 58.3 / 81.0
On a CPU shared with other jobs, --threads 1 ran about ten times faster than the default two threads.
"""

from __future__ import annotations

import argparse
import time

import torch

from hyperprag.core.metrics import extract_answer, score
from hyperprag.core.models import load_base_model
from hyperprag.core.prompts import answer_prompt
from hyperprag.demo import load_demo_questions


@torch.no_grad()
def generate(model, tok, prompts: list[str], batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy continuations, batched with left padding."""
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)  # [b, new]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--splits", nargs="+", default=["train", "unseen", "general"])
    ap.add_argument("--modes", nargs="+", default=["closed-book", "passage"], choices=["closed-book", "passage"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--show-misses", action="store_true", help="print questions not answered with the passage")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_base_model(args.model)
    rows = []
    for split in args.splits:
        qs = load_demo_questions(split)
        modes = {}
        if "closed-book" in args.modes or not any(q.passages for q in qs):
            modes["closed-book"] = [answer_prompt(tok, q.question) for q in qs]
        if "passage" in args.modes and any(q.passages for q in qs):
            modes["passage"] = [answer_prompt(tok, q.question, passages=[(p.title, p.text) for p in q.passages])
                                for q in qs]
        for mode, prompts in modes.items():
            t0 = time.perf_counter()
            gens = generate(model, tok, prompts, args.batch_size, args.max_new_tokens)
            scores = [score(g, q) for g, q in zip(gens, qs, strict=True)]  # on the extracted short answer
            mean = {k: 100 * sum(sc[k] for sc in scores) / len(qs) for k in ("contains", "em", "f1")}
            rows.append((split, mode, len(qs), mean, time.perf_counter() - t0))
            if args.show_misses:
                for q, g, sc in zip(qs, gens, scores, strict=True):
                    if not sc["contains"] and (mode == "passage" or split == "general"):
                        print(f"MISS [{split}/{mode}] {q.id}: {q.question} | gold {q.answers[0]!r} "
                              f"| got {extract_answer(g)!r}")
    print(f"\n{'split':8} {'mode':12} {'n':>4} {'contains %':>11} {'EM %':>6} {'F1 %':>6} {'sec':>6}")
    for split, mode, n, m, sec in rows:
        print(f"{split:8} {mode:12} {n:4d} {m['contains']:11.1f} {m['em']:6.1f} {m['f1']:6.1f} {sec:6.1f}")


if __name__ == "__main__":
    main()
