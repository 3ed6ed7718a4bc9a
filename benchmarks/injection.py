"""Does a document's adapter inject its facts? Closed-book QA on the invented demo documents.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/injection.py --model smollm2-135m --docs 10 \
        --set epochs=10 --set lr=3e-4 [--config configs/teacher/smollm2-135m.yaml] [--tag NAME]

For each document a LoRA is trained (training/teacher.py) from augmentation (training/augment rules),
then the demo questions, worded differently from the passage and never in a training sequence (checked),
are answered four ways: no adapter, the document's own adapter, another (fixed, random) document's
adapter, and the passage in context. Reported: closed-book EM / F1 / answer-contained of a greedy
16-token generation after the pre-fill, the gold-answer loss (inference/generate.py answer_nll: the mean
loss per token of the answer as the teacher trains it, " {answer}.", teacher-forced), general
questions' accuracy without / with an adapter, and training seconds per document. One JSON line per run
is appended to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyperprag.core.data import Document, Question, corpus_index, load_corpus, load_questions, supporting_ids  # noqa: E402
from hyperprag.core.lora import LoraSpec, LoraWeights  # noqa: E402
from hyperprag.core.metrics import normalize_answer, score  # noqa: E402
from hyperprag.core.models import load_base_model  # noqa: E402
from hyperprag.core.prompts import answer_completion, answer_prompt  # noqa: E402
from inference.generate import answer_nll, generate  # noqa: E402
from training.teacher import TeacherConfig, document_examples, train_documents  # noqa: E402

DEMO = ROOT / "hyperprag" / "demo"


def augment(docs: list[Document], method: str) -> list:
    """Rule-based augmentation from training/augment (QA pairs + rewrites); 'cloze' is a bare fallback."""
    if method == "rules":
        try:
            from training.augment import augment_documents

            return augment_documents(docs, method="rules")
        except ImportError:
            from training.augment.facts import rule_qa
            from training.augment.paraphrase import paraphrase

            return [SimpleNamespace(qa=rule_qa(d), rewrites=paraphrase(d, n=2)) for d in docs]
    if method == "cloze":  # one fill-in question per sentence, answer = its last word
        out = []
        for d in docs:
            qa = []
            for s in [s.strip() for s in d.text.split(". ") if s.strip()]:
                words = s.rstrip(".").split()
                qa.append(SimpleNamespace(question=f"{d.title}: {' '.join(words[:-1])} ____?", answer=words[-1],
                                          full_answer=s))
            out.append(SimpleNamespace(qa=qa, rewrites=[]))
        return out
    raise ValueError(f"unknown augmentation {method!r}")


def keep_forms(qa: list, n: int) -> list:
    """At most `n` QA pairs per distinct answer (rule QA asks each fact in up to 3 forms)."""
    seen: dict[str, int] = {}
    out = []
    for p in qa:
        seen[p.answer] = seen.get(p.answer, 0) + 1
        if seen[p.answer] <= n:
            out.append(p)
    return out


def load_split(split: str) -> tuple[list[Document], list[Question]]:
    splits = ["train", "unseen"] if split == "all" else [split]
    docs = [d for s in splits for d in load_corpus(DEMO / s / "corpus.jsonl")]
    questions = [q for s in splits for q in load_questions(DEMO / s / "questions.jsonl")]
    return docs, questions


def evaluate(model, tok, questions: list[Question], prompts: list[str], spec: LoraSpec,
             adapters: list[LoraWeights] | None, max_new_tokens: int, batch_size: int = 16) -> dict:
    """Greedy answers and the gold-answer loss (inference/generate.py), one adapter per prompt or none."""
    texts = generate(model, tok, prompts, adapters, spec, max_new_tokens, batch_size)
    scores = [score(t, q) for t, q in zip(texts, questions, strict=True)]
    losses = answer_nll(model, tok, prompts, [answer_completion(q.answers[0]) for q in questions], adapters, spec,
                        batch_size)
    res = {k: statistics.mean(s[k] for s in scores) for k in ("em", "f1", "contains")}
    res["gold_loss"] = statistics.mean(losses)
    res["samples"] = [(q.question, q.answers[0], t.strip()[:60]) for q, t in zip(questions, texts, strict=True)]
    return res


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", default="train", choices=["train", "unseen", "all"])
    ap.add_argument("--docs", type=int, default=10, help="first N documents of the split")
    ap.add_argument("--config", help="a configs/teacher/*.yaml to start from (else TeacherConfig.for_model)")
    ap.add_argument("--set", action="append", default=[], help="TeacherConfig override key=value (YAML value)")
    ap.add_argument("--augment", default="rules", choices=["rules", "cloze"])
    ap.add_argument("--forms", type=int, default=0, help="keep at most N QA pairs per distinct answer (0 = all)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="seed of the 'other document' pairing")
    ap.add_argument("--skip-baselines", action="store_true", help="skip no-adapter / in-context rows")
    ap.add_argument("--samples", type=int, default=0, help="print this many own-adapter generations")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--store", default=None, help="evaluate this teacher store's adapters instead of training")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(ROOT / "runs" / "injection.jsonl"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    base = TeacherConfig.from_yaml(args.config).to_dict() if args.config else \
        TeacherConfig.for_model(args.model).to_dict()
    config = TeacherConfig.from_dict({**base, **parse_sets(args.set)})
    model, tok = load_base_model(args.model, dtype=config.dtype)
    docs, questions = load_split(args.split)
    docs = docs[: args.docs]
    if len(docs) < 2:
        raise SystemExit("--docs must be >= 2 (the 'other document' row needs a second adapter)")
    index = corpus_index(docs)
    q_doc = [(q, supporting_ids(q, index, strict=False)) for q in questions]
    q_doc = [(q, ids[0]) for q, ids in q_doc if ids]
    pos = {d.id: i for i, d in enumerate(docs)}

    t0 = time.perf_counter()
    augs = augment(docs, args.augment)
    if args.forms:
        augs = [SimpleNamespace(qa=keep_forms(a.qa, args.forms), rewrites=a.rewrites) for a in augs]
    aug_s = (time.perf_counter() - t0) / len(docs)
    examples = document_examples(tok, docs, augs, config, model)
    train_qs = {normalize_answer(qa.question) for a in augs for qa in a.qa}
    leaked = sum(normalize_answer(q.question) in train_qs for q, _ in q_doc)
    if leaked:
        raise SystemExit(f"{leaked} evaluation questions appear verbatim among training questions")
    n_seq = statistics.mean(len(e) for e in examples)

    if args.store:  # adapters made by `hyperprag teach` (the same config): evaluate them, train nothing
        from hyperprag.core.store import AdapterStore

        store = AdapterStore.open(args.store, expect_base_model=args.model)
        missing = [d.id for d in docs if d.id not in store]
        if missing:
            raise SystemExit(f"{args.store} has no adapter for {missing}")
        adapters = store.get_many([d.id for d in docs])
        train_s = statistics.mean(a.meta.get("seconds", float("nan")) for a in adapters)
    else:
        t0 = time.perf_counter()
        adapters = train_documents(model, tok, docs, augs, config)
        train_s = (time.perf_counter() - t0) / len(docs)
    if config.dtype != "float32":  # adapters are served on the float32 model (hyperprag answer), so judged there
        model = load_base_model(args.model)[0]

    rng = random.Random(args.seed)
    other = list(range(len(docs)))
    while any(i == o for i, o in enumerate(other)):  # a fixed derangement: nobody gets their own
        rng.shuffle(other)
    qs = [q for q, _ in q_doc]
    own_idx = [pos[d] for _, d in q_doc]
    closed = [answer_prompt(tok, q.question) for q in qs]
    in_ctx = [answer_prompt(tok, q.question, [(docs[i].title, docs[i].text)]) for q, i in zip(qs, own_idx,
                                                                                               strict=True)]
    spec = config.spec
    rows = {}
    if not args.skip_baselines:
        rows["none"] = evaluate(model, tok, qs, closed, spec, None, args.max_new_tokens)
    rows["own"] = evaluate(model, tok, qs, closed, spec, [adapters[i] for i in own_idx], args.max_new_tokens)
    rows["other"] = evaluate(model, tok, qs, closed, spec, [adapters[other[i]] for i in own_idx],
                             args.max_new_tokens)
    if not args.skip_baselines:
        rows["context"] = evaluate(model, tok, qs, in_ctx, spec, None, args.max_new_tokens)

    general = list(load_questions(DEMO / "general.jsonl"))
    from training.sequences import ANCHOR_QUESTIONS

    if {normalize_answer(q.question) for q in general} & {normalize_answer(q) for q in ANCHOR_QUESTIONS}:
        raise SystemExit("a general evaluation question is among the anchor questions")
    g_prompts = [answer_prompt(tok, q.question) for q in general]
    g_none = evaluate(model, tok, general, g_prompts, spec, None, args.max_new_tokens)
    g_with = evaluate(model, tok, general, g_prompts, spec, [adapters[i % len(docs)] for i in range(len(general))],
                      args.max_new_tokens)

    final_losses = [a.meta["final_loss"] for a in adapters]
    print(f"\n{args.model}  docs={len(docs)} questions={len(qs)} seq/doc={n_seq:.0f} "
          f"train s/doc={train_s:.1f} augment s/doc={aug_s:.3f} final train loss={statistics.mean(final_losses):.3f}")
    print(f"config: {json.dumps({k: v for k, v in config.to_dict().items() if base.get(k) != v or k in ('epochs', 'lr')})}")
    print(f"{'condition':<10} {'EM':>6} {'F1':>6} {'contains':>8} {'gold loss':>9}")
    for name, r in rows.items():
        print(f"{name:<10} {r['em']:6.3f} {r['f1']:6.3f} {r['contains']:8.3f} {r['gold_loss']:9.3f}")
    print(f"general    none EM {g_none['em']:.3f} contains {g_none['contains']:.3f} gold loss "
          f"{g_none['gold_loss']:.3f} | with adapter EM {g_with['em']:.3f} contains {g_with['contains']:.3f} "
          f"gold loss {g_with['gold_loss']:.3f}")
    for s in rows["own"]["samples"][: args.samples]:
        print("  own:", s)
    for s0, s1 in list(zip(g_none["samples"], g_with["samples"], strict=True))[: args.samples]:
        print("  general:", s0[0][:40], "| gold", s0[1], "| none", s0[2][:30], "| with", s1[2][:30])
    record = {"tag": args.tag, "model": args.model, "split": args.split, "docs": len(docs), "questions": len(qs),
              "augment": args.augment, "config": config.to_dict(), "seq_per_doc": n_seq,
              "train_s_per_doc": train_s, "augment_s_per_doc": aug_s, "threads": torch.get_num_threads(),
              "final_train_loss": statistics.mean(final_losses),
              "rows": {k: {m: v for m, v in r.items() if m != "samples"} for k, r in rows.items()},
              "general": {"none": {k: g_none[k] for k in ("em", "contains", "gold_loss")},
                          "with": {k: g_with[k] for k in ("em", "contains", "gold_loss")}}}
    os.makedirs(Path(args.out).parent, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return record


if __name__ == "__main__":
    main()
