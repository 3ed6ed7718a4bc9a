"""Assembling the pieces a command needs: inputs, base model, retriever and adapter sources."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hyperprag.core.data import Document, Loaded, Question, load_corpus, load_questions, pool_corpus
from hyperprag.core.models import DEFAULT_MODEL, load_base_model

log = logging.getLogger(__name__)
MAX_CHARS = 20000
"""Longest document or question passage (characters) a command accepts; longer ones are bad records (the
corpus loader's default; a multi-megabyte passage would otherwise reach a prompt whole)."""


def _is_question_file(path: str | Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    return "question" in json.loads(line)
                except json.JSONDecodeError:
                    return False
    return False


def report_skipped(loaded: Loaded) -> list[str]:
    """Log every record `on_error="skip"` left out (file, line, field, problem), one warning each."""
    for err in loaded.skipped:
        log.warning("skipped bad record: %s", err)
    return [str(err) for err in loaded.skipped]


def read_questions(path: str, on_error: str = "fail") -> list[Question]:
    """A question JSONL with the command-line policies: passages over MAX_CHARS are bad, skips reported."""
    loaded = load_questions(path, on_error=on_error, max_chars=MAX_CHARS)
    report_skipped(loaded)
    return list(loaded)


def read_corpus(path: str, on_error: str = "fail") -> list[Document]:
    """A corpus JSONL with the command-line policies: texts over MAX_CHARS are bad, skips reported."""
    loaded = load_corpus(path, on_error=on_error, max_chars=MAX_CHARS)
    report_skipped(loaded)
    return list(loaded)


def load_documents(path: str, on_error: str = "fail") -> list[Document]:
    """A corpus JSONL, or the pooled passages of a question JSONL."""
    if _is_question_file(path):
        return pool_corpus(read_questions(path, on_error=on_error))
    return read_corpus(path, on_error=on_error)


def load_eval_inputs(questions: str, corpus: str | None, on_error: str = "fail", limit: int | None = None,
                     offset: int = 0) -> tuple[list[Question], list[Document]]:
    """Questions (sliced) and the corpus they are answered from (pooled from all questions by default)."""
    qs = read_questions(questions, on_error=on_error)
    docs = read_corpus(corpus, on_error=on_error) if corpus else pool_corpus(qs)
    qs = qs[offset:]
    if limit is not None:
        qs = qs[:limit]
    return qs, docs


def build_answerer(docs: list[Document], model: str = DEFAULT_MODEL, dtype: str = "float32",
                   retriever: str = "bm25", index: str | None = None, top_k: int = 3, store: str | None = None,
                   hypernet: str | None = None, composition: str = "cat", max_new_tokens: int = 20,
                   batch_size: int = 8, loaded=None, mcq_scoring: str = "generate"):
    """The command line's `Answerer` over `docs`, from names and paths: the base model, a saved retrieval
    index, a teacher store, a hypernetwork or generated store (each checked against the model before
    anything is answered). `loaded` reuses an already loaded (model, tokenizer)."""
    from inference.answer import make_answerer

    base, tokenizer = loaded if loaded is not None else load_base_model(model, dtype=dtype)
    if index and retriever != "gold":
        from inference.retrieval import load_retriever

        retriever = load_retriever(index)
    teacher = None
    if store:
        from hyperprag.core.store import AdapterStore

        teacher = AdapterStore.open(store, expect_base_model=model).check_fits(base)
    hyper = load_hyper_source(hypernet, base, tokenizer, docs, model) if hypernet else None
    return make_answerer(base, tokenizer, docs, retriever=retriever, top_k=top_k, teacher=teacher, hyper=hyper,
                         composition=composition, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         mcq_scoring=mcq_scoring)


def load_hyper_source(path: str, base, tokenizer, docs: list[Document], model_name: str):
    """A generated adapter store, or a hypernetwork checkpoint that generates adapters on the fly."""
    if (Path(path) / "manifest.json").exists():
        from hyperprag.core.store import AdapterStore

        return AdapterStore.open(path, expect_base_model=model_name).check_fits(base)
    from inference.parameterize import OnTheFlySource

    return OnTheFlySource.from_checkpoint(path, base, tokenizer, docs)
