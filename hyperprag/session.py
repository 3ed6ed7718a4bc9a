"""Assembling the pieces a command needs: inputs, base model, retriever and adapter sources."""

from __future__ import annotations

import json
from pathlib import Path

from hyperprag.core.data import Document, Question, load_corpus, load_questions, pool_corpus
from hyperprag.core.models import DEFAULT_MODEL, load_base_model


def _is_question_file(path: str | Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    return "question" in json.loads(line)
                except json.JSONDecodeError:
                    return False
    return False


def load_documents(path: str, on_error: str = "fail") -> list[Document]:
    """A corpus JSONL, or the pooled passages of a question JSONL."""
    if _is_question_file(path):
        return pool_corpus(load_questions(path, on_error=on_error))
    return list(load_corpus(path, on_error=on_error))


def load_eval_inputs(questions: str, corpus: str | None, on_error: str = "fail", limit: int | None = None,
                     offset: int = 0) -> tuple[list[Question], list[Document]]:
    """Questions (sliced) and the corpus they are answered from (pooled from all questions by default)."""
    qs = list(load_questions(questions, on_error=on_error))
    docs = list(load_corpus(corpus, on_error=on_error)) if corpus else pool_corpus(qs)
    qs = qs[offset:]
    if limit is not None:
        qs = qs[:limit]
    return qs, docs


def build_answerer(docs: list[Document], model: str = DEFAULT_MODEL, dtype: str = "float32",
                   retriever: str = "bm25", index: str | None = None, top_k: int = 3, store: str | None = None,
                   hypernet: str | None = None, composition: str = "cat", max_new_tokens: int = 20,
                   batch_size: int = 8, loaded=None):
    """An `Answerer` over `docs`; `loaded` reuses an already loaded (model, tokenizer)."""
    from inference.answer import Answerer
    from inference.retrieval import build_retriever, load_retriever

    base, tokenizer = loaded if loaded is not None else load_base_model(model, dtype=dtype)
    ret, mode = None, "retriever"
    if retriever == "gold":
        mode = "gold"
    elif index:
        ret = load_retriever(index)
    elif retriever != "none" and docs:
        ret = build_retriever(retriever, docs)
    teacher = hyper = None
    if store:
        from hyperprag.core.store import AdapterStore

        teacher = AdapterStore.open(store, expect_base_model=model)
    if hypernet:
        hyper = load_hyper_source(hypernet, base, tokenizer, docs, model)
    return Answerer(base, tokenizer, {d.id: d for d in docs}, retriever=ret, teacher=teacher, hyper=hyper,
                    top_k=top_k, composition=composition, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    retrieval=mode)


def load_hyper_source(path: str, base, tokenizer, docs: list[Document], model_name: str):
    """A generated adapter store, or a hypernetwork checkpoint that generates adapters on the fly."""
    if (Path(path) / "manifest.json").exists():
        from hyperprag.core.store import AdapterStore

        return AdapterStore.open(path, expect_base_model=model_name)
    from inference.parameterize import OnTheFlySource

    return OnTheFlySource.from_checkpoint(path, base, tokenizer, docs)
