"""augment_documents: rule-based and/or LLM augmentation of a corpus, cached per document."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hyperprag.core.data import Document
from training.augment.cache import cache_key, cache_path, load_cached, save_cached
from training.augment.facts import analyze, coverage, rule_qa_rounds
from training.augment.llm import llm_qa, llm_rewrites
from training.augment.paraphrase import paraphrase
from training.augment.records import AUGMENT_SOURCES, Augmentation, failure_code

logger = logging.getLogger(__name__)
METHODS = ("rules", "llm", "rules+llm")


def _augment_model_name(model, augment_model: str | None) -> str | None:
    if augment_model:
        return augment_model
    if model is None:
        return None
    from hyperprag.core.models import model_id

    return model_id(model)


def augment_documents(documents: Sequence[Document], method: str = "rules", model=None, tokenizer=None,
                      augment_model: str | None = None, cache_dir: str | Path | None = None, batch_size: int = 8,
                      n_rewrites: int = 2, max_retries: int = 2, seed: int = 0, n_qa: int = 3,
                      max_per_span: int = 3, max_new_tokens: int = 256, device: str = "cpu",
                      dtype: str = "float32") -> list[Augmentation]:
    """Rewrites and QA pairs for every document, in input order.

    method: "rules" (default; no model needed), "llm" (LLM QA and rewrites; a document whose LLM QA falls
    short of `n_qa` pairs gets the rule QA too) or "rules+llm" (both, always). `augment_model` (hub id,
    folder or embedded name) is loaded with load_base_model and used instead of `model`/`tokenizer`, so
    a larger instruct model can augment while the base model stays small. LLM rewrites that fail the
    fidelity check are replaced by rule paraphrases. With `cache_dir`, each document's result is written
    as it finishes and reused on reruns.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    uses_llm = method != "rules"
    if uses_llm and augment_model is None and (model is None or tokenizer is None):
        raise ValueError(f"method {method!r} needs model and tokenizer, or augment_model (a hub id, folder or "
                         "embedded name such as 'smollm2-135m')")
    model_name = _augment_model_name(model, augment_model) if uses_llm else None
    settings = {"n_rewrites": n_rewrites, "max_per_span": max_per_span, "seed": seed}
    if uses_llm:
        settings.update(n_qa=n_qa, max_retries=max_retries, max_new_tokens=max_new_tokens)
    results: list[Augmentation | None] = [None] * len(documents)
    paths: list[Path | None] = [None] * len(documents)
    todo: list[int] = []
    for i, doc in enumerate(documents):
        if cache_dir is not None:
            paths[i] = cache_path(cache_dir, doc.content_hash, cache_key(doc.content_hash, method, model_name,
                                                                          settings))
            results[i] = load_cached(paths[i], doc.id)
        if results[i] is None:
            todo.append(i)
    cached = len(documents) - len(todo)
    start = last_report = time.perf_counter()
    if todo and uses_llm and augment_model is not None:
        from hyperprag.core.models import load_base_model

        model, tokenizer = load_base_model(augment_model, dtype=dtype, device=device)
    for c in range(0, len(todo), batch_size):  # one chunk at a time, so finished documents are cached early
        chunk = todo[c:c + batch_size]
        docs = [documents[i] for i in chunk]
        for i, aug in zip(chunk, _augment_chunk(docs, method, model, tokenizer, batch_size, n_rewrites,
                                                max_retries, seed, n_qa, max_per_span, max_new_tokens), strict=True):
            results[i] = aug
            if paths[i] is not None:
                save_cached(paths[i], aug, {"method": method, "augment_model": model_name, **settings})
        done = min(c + batch_size, len(todo))
        if done == len(todo) or time.perf_counter() - last_report > 10:  # progress every 10 s, not every chunk
            logger.info("augmented %d/%d documents (%.1f s)", done, len(todo), time.perf_counter() - start)
            last_report = time.perf_counter()
    augs = [a for a in results if a is not None]
    summary = summarize(augs)
    logger.info("augmentation (%s): %d documents, %d from cache, %d computed in %.1f s; summary %s", method,
                len(augs), cached, len(todo), time.perf_counter() - start, summary)
    return augs


def _augment_chunk(docs: list[Document], method: str, model, tokenizer, batch_size: int, n_rewrites: int,
                   max_retries: int, seed: int, n_qa: int, max_per_span: int, max_new_tokens: int
                   ) -> list[Augmentation]:
    facts = [analyze(d) for d in docs]
    failures: list[list[str]] = [[] for _ in docs]
    qa = [[] for _ in docs]
    if method == "rules":
        rewrites = [paraphrase(d, n=n_rewrites, seed=seed, facts=f) for d, f in zip(docs, facts, strict=True)]
    else:
        rewritten = llm_rewrites(docs, model, tokenizer, n=n_rewrites, batch_size=batch_size, seed=seed,
                                 facts=facts)
        rewrites = [r for r, _ in rewritten]
        for k, (_, fails) in enumerate(rewritten):
            failures[k] += fails
        generated = llm_qa(docs, model, tokenizer, n=n_qa, max_retries=max_retries, batch_size=batch_size,
                           max_new_tokens=max_new_tokens, seed=seed, facts=facts)
        for k, (pairs, fails) in enumerate(generated):
            qa[k] += pairs
            failures[k] += fails
    out = []
    for k, (d, f) in enumerate(zip(docs, facts, strict=True)):
        if method != "llm" or len(qa[k]) < n_qa:  # rules always, or as the fallback of a short LLM result
            rounds = rule_qa_rounds(f, max_per_span)  # one question per fact first, then the LLM's, then the rest
            qa[k] = rounds[0] + qa[k] + [p for r in rounds[1:] for p in r] if rounds else qa[k]
        out.append(Augmentation(doc_id=d.id, content_hash=d.content_hash, rewrites=rewrites[k], qa=qa[k],
                                failures=failures[k], coverage=coverage(f.spans, qa[k])))
    return out


def summarize(augs: Sequence[Augmentation]) -> dict:
    """Counts for a log line: documents, QA pairs per source, rewrites, failures by reason, mean coverage."""
    by_source = Counter({s: 0 for s in AUGMENT_SOURCES})
    failures: Counter = Counter()
    for a in augs:
        by_source.update(q.source for q in a.qa)
        failures.update(failure_code(f) for f in a.failures)
    covs = [a.coverage.get("coverage") for a in augs if a.coverage.get("coverage") is not None]
    return {"documents": len(augs), "qa_pairs": sum(by_source.values()), "qa_by_source": dict(by_source),
            "qa_per_document": sum(by_source.values()) / len(augs) if augs else 0.0,
            "rewrites": sum(len(a.rewrites) for a in augs), "documents_with_failures": sum(1 for a in augs if a.failures),
            "failures": dict(sorted(failures.items())),
            "mean_coverage": sum(covs) / len(covs) if covs else math.nan}
