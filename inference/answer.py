"""Answering modes: where the knowledge comes from for each question.

| mode          | passages in prompt | adapters applied                                   |
|---------------|--------------------|----------------------------------------------------|
| vanilla       | no                 | none                                               |
| rag           | top-k              | none                                               |
| prag          | no                 | teacher LoRAs of the top-k documents, composed     |
| prag-combine  | top-k              | teacher LoRAs of the top-k documents, composed     |
| hyper         | no                 | hypernetwork LoRAs of the top-k documents          |
| hyper-combine | top-k              | hypernetwork LoRAs of the top-k documents          |

"top-k" documents come from a retriever, or with `retrieval="gold"` from the question's own passages.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hyperprag.core.compose import compose
from hyperprag.core.data import Document, Question
from hyperprag.core.lora import LoraSpec, LoraWeights
from hyperprag.core.metrics import extract_answer
from hyperprag.core.prompts import answer_completion, answer_prompt
from inference.generate import answer_nll, generate

MODES = ("vanilla", "rag", "prag", "prag-combine", "hyper", "hyper-combine")
PASSAGE_MODES = {"rag", "prag-combine", "hyper-combine"}
ADAPTER_SOURCE = {"prag": "teacher", "prag-combine": "teacher", "hyper": "hyper", "hyper-combine": "hyper"}


class AdapterSource(Protocol):
    """Anything that returns one adapter per document id: a store, or a hypernetwork on the fly."""

    spec: LoraSpec

    def get_many(self, doc_ids: Sequence[str]) -> list[LoraWeights]: ...


class Retriever(Protocol):
    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]: ...


@dataclass
class Prediction:
    id: str
    mode: str
    prediction: str
    raw: str
    doc_ids: list[str]
    seconds: float
    prompt_tokens: int
    answer_nll: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Answerer:
    """Answers questions in any mode over one corpus."""

    model: object
    tokenizer: object
    corpus: dict[str, Document]
    retriever: Retriever | None = None
    teacher: AdapterSource | None = None
    hyper: AdapterSource | None = None
    top_k: int = 3
    composition: str = "cat"
    max_new_tokens: int = 20
    batch_size: int = 8
    retrieval: str = "retriever"  # "retriever" or "gold"
    stop_at_answer: bool = True  # end generation once the extracted answer is final (same answers, faster)
    _by_content: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_content = {(d.title, d.text): d.id for d in self.corpus.values()}

    def documents_for(self, questions: Sequence[Question]) -> list[list[str]]:
        """Top-k document ids per question, from the retriever or the questions' own passages."""
        if self.retrieval == "gold":
            out = []
            for q in questions:
                ids = [self._by_content.get((p.title, p.text)) for p in q.passages]
                out.append([i for i in ids if i is not None][: self.top_k])
            return out
        if self.retriever is None:
            raise ValueError("this mode needs a retriever (or retrieval='gold')")
        hits = self.retriever.search([q.question for q in questions], self.top_k)
        return [[doc_id for doc_id, _ in h] for h in hits]

    def supporting(self, question: Question) -> list[str]:
        """Corpus ids of the question's supporting passages that the corpus holds (the gold set of recall@k)."""
        ids = [self._by_content.get((p.title, p.text)) for p in question.passages if p.supporting]
        return list(dict.fromkeys(i for i in ids if i is not None))

    def _source(self, mode: str) -> AdapterSource:
        source = self.teacher if ADAPTER_SOURCE[mode] == "teacher" else self.hyper
        if source is None:
            kind = "a teacher adapter store (--store)" if ADAPTER_SOURCE[mode] == "teacher" else \
                "a hypernetwork (--hypernet) or a generated store"
            raise ValueError(f"mode {mode!r} needs {kind}")
        return source

    def prompts_and_adapters(self, questions: Sequence[Question], mode: str
                             ) -> tuple[list[str], list[LoraWeights | None], list[list[str]], LoraSpec | None]:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        doc_ids = self.documents_for(questions) if mode != "vanilla" else [[] for _ in questions]
        prompts = []
        for q, ids in zip(questions, doc_ids, strict=True):
            passages = [(self.corpus[i].title, self.corpus[i].text) for i in ids] if mode in PASSAGE_MODES else []
            prompts.append(answer_prompt(self.tokenizer, q.question, passages, q.options))
        adapters: list[LoraWeights | None] = [None] * len(questions)
        spec = None
        if mode in ADAPTER_SOURCE:
            source = self._source(mode)
            spec = source.spec
            unique = sorted({i for ids in doc_ids for i in ids})
            by_id = dict(zip(unique, source.get_many(unique), strict=True))
            adapters = [compose([by_id[i] for i in ids], self.composition) if ids else None for ids in doc_ids]
        return prompts, adapters, doc_ids, spec

    def answer(self, questions: Sequence[Question], mode: str, with_nll: bool = False) -> list[Prediction]:
        """Answer a batch of questions; latency is the batch's wall time divided by its size."""
        start = time.perf_counter()
        prompts, adapters, doc_ids, spec = self.prompts_and_adapters(questions, mode)
        raw = generate(self.model, self.tokenizer, prompts, adapters, spec, self.max_new_tokens, self.batch_size,
                       stop_at_answer=self.stop_at_answer)
        seconds = (time.perf_counter() - start) / max(len(questions), 1)
        nll: list[float | None] = [None] * len(questions)
        if with_nll:
            completions = [answer_completion(q.answers[0]) for q in questions]
            nll = answer_nll(self.model, self.tokenizer, prompts, completions, adapters, spec, self.batch_size)
        return [Prediction(q.id, mode, extract_answer(r), r, ids, seconds,
                           len(self.tokenizer(p, add_special_tokens=False)["input_ids"]), n)
                for q, r, ids, p, n in zip(questions, raw, doc_ids, prompts, nll, strict=True)]
