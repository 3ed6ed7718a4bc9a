"""Answering questions in any mode (inference/modes.py): where each question's documents come from
(`Retrieval`), which adapters apply (inference/sources.py), one batched generation.

"top-k" documents come from a retriever, or with gold retrieval from the question's own passages, found in
the corpus by their content. `make_answerer` is the one way to build an `Answerer` from a retriever choice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hyperprag.core.compose import compose
from hyperprag.core.data import Document, Question, corpus_index, supporting_ids
from hyperprag.core.errors import InputError
from hyperprag.core.lora import LoraSpec, LoraWeights
from hyperprag.core.metrics import extract_answer
from hyperprag.core.prompts import answer_completion, answer_prompt
from hyperprag.core.store import AdapterStore
from inference.generate import answer_nll, generate, option_nll
from inference.modes import ADAPTER_MODES, MCQ_SCORING, MODES, PASSAGE_MODES, TEACHER_MODES, check_mode
from inference.sources import AdapterSource, as_source

__all__ = ["MCQ_SCORING", "MODES", "Answerer", "Prediction", "Retrieval", "make_answerer"]

CONTENT_FREE = "N/A"
"""The question of calibrated option scoring's content-free prompt (Holtzman et al. 2021 use "N/A")."""


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
class Retrieval:
    """Where each question's top-k documents come from: a retriever over `corpus`, or (`gold`) the question's
    own passages, matched to corpus documents by content."""

    corpus: Mapping[str, Document]
    retriever: Retriever | None = None
    top_k: int = 3
    gold: bool = False
    _index: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = corpus_index(self.corpus.values())

    def documents_for(self, questions: Sequence[Question]) -> list[list[str]]:
        """Top-k document ids per question."""
        if self.gold:
            return [[i for p in q.passages if (i := self._index.get((p.title, p.text))) is not None][: self.top_k]
                    for q in questions]
        if self.retriever is None:
            raise ValueError("this mode needs a retriever (or gold retrieval)")
        hits = self.retriever.search([q.question for q in questions], self.top_k)
        return [[doc_id for doc_id, _ in h] for h in hits]

    def supporting(self, question: Question) -> list[str]:
        """Corpus ids of the question's supporting passages that the corpus holds (the gold set of recall@k)."""
        return list(dict.fromkeys(supporting_ids(question, self._index, strict=False)))


@dataclass
class Answerer:
    """Answers questions in any mode over one corpus. Build it with `make_answerer`; stores given as
    `teacher` or `hyper` are read through inference/sources.py's StoreSource (documents found by content)."""

    model: object
    tokenizer: object
    corpus: Mapping[str, Document]
    retriever: Retriever | None = None
    teacher: AdapterSource | AdapterStore | None = None
    hyper: AdapterSource | AdapterStore | None = None
    top_k: int = 3
    composition: str = "cat"
    max_new_tokens: int = 20
    batch_size: int = 8
    retrieval: str = "retriever"  # "retriever" or "gold"
    stop_at_answer: bool = True  # end generation once the extracted answer is final (same answers, faster)
    mcq_scoring: str = "generate"  # multiple choice: generate | likelihood (MCQ_SCORING)

    def __post_init__(self) -> None:
        if self.mcq_scoring not in MCQ_SCORING:
            raise ValueError(f"mcq_scoring {self.mcq_scoring!r} is not one of {', '.join(MCQ_SCORING)}")
        self.teacher, self.hyper = as_source(self.teacher, self.corpus), as_source(self.hyper, self.corpus)
        self.finder = Retrieval(self.corpus, self.retriever, self.top_k, self.retrieval == "gold")

    def documents_for(self, questions: Sequence[Question]) -> list[list[str]]:
        """Top-k document ids per question, from the retriever or the questions' own passages."""
        return self.finder.documents_for(questions)

    def supporting(self, question: Question) -> list[str]:
        """Corpus ids of the question's supporting passages that the corpus holds (the gold set of recall@k)."""
        return self.finder.supporting(question)

    def _source(self, mode: str) -> AdapterSource:
        teacher = mode in TEACHER_MODES
        source = self.teacher if teacher else self.hyper
        if source is None:
            kind = "a teacher adapter store (--store)" if teacher else "a hypernetwork (--hypernet) or a generated store"
            raise InputError(f"mode {mode!r} needs {kind}")
        return source

    def check_modes(self, modes: Iterable[str]) -> None:
        """Refuse, before anything is answered, a mode that is unknown or lacks its adapter source."""
        for mode in modes:
            if check_mode(mode) in ADAPTER_MODES:
                self._source(mode)

    def prompts_and_adapters(self, questions: Sequence[Question], mode: str
                             ) -> tuple[list[str], list[LoraWeights | None], list[list[str]], LoraSpec | None]:
        check_mode(mode)
        doc_ids = self.documents_for(questions) if mode != "vanilla" else [[] for _ in questions]
        prompts = []
        for q, ids in zip(questions, doc_ids, strict=True):
            passages = [(self.corpus[i].title, self.corpus[i].text) for i in ids] if mode in PASSAGE_MODES else []
            prompts.append(answer_prompt(self.tokenizer, q.question, passages, q.options))
        adapters: list[LoraWeights | None] = [None] * len(questions)
        spec = None
        if mode in ADAPTER_MODES:
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
        scored = [i for i, q in enumerate(questions) if q.options] if self.mcq_scoring != "generate" else []
        raw: list[str] = [""] * len(questions)
        extra: list[dict] = [{} for _ in questions]
        priors: dict[tuple, list[float]] = {}  # calibrated: one content-free pass per distinct option set
        for i in scored:
            options = questions[i].options
            completions = [answer_completion(t) for t in options.values()]
            nll = option_nll(self.model, self.tokenizer, prompts[i], completions, adapters[i], spec)
            by_letter = dict(zip(options, nll, strict=True))
            extra[i] = {"option_nll": by_letter}
            if self.mcq_scoring == "calibrated":  # minus the option's NLL with no question to answer
                key = tuple(options.items())
                if key not in priors:
                    free = answer_prompt(self.tokenizer, CONTENT_FREE, [], options)
                    priors[key] = option_nll(self.model, self.tokenizer, free, completions)
                extra[i]["option_prior_nll"] = dict(zip(options, priors[key], strict=True))
                by_letter = {k: v - p for (k, v), p in zip(by_letter.items(), priors[key], strict=True)}
            raw[i] = min(by_letter, key=by_letter.__getitem__)  # the letter of the likeliest option
        done = set(scored)
        rest = [i for i in range(len(questions)) if i not in done]
        if rest:
            texts = generate(self.model, self.tokenizer, [prompts[i] for i in rest], [adapters[i] for i in rest],
                             spec, self.max_new_tokens, self.batch_size, stop_at_answer=self.stop_at_answer)
            for i, t in zip(rest, texts, strict=True):
                raw[i] = t
        seconds = (time.perf_counter() - start) / max(len(questions), 1)
        nll: list[float | None] = [None] * len(questions)
        if with_nll:
            completions = [answer_completion(q.answers[0]) for q in questions]
            nll = answer_nll(self.model, self.tokenizer, prompts, completions, adapters, spec, self.batch_size)
        return [Prediction(q.id, mode, extract_answer(r), r, ids, seconds,
                           len(self.tokenizer(p, add_special_tokens=False)["input_ids"]), n, x)
                for q, r, ids, p, n, x in zip(questions, raw, doc_ids, prompts, nll, extra, strict=True)]


def make_answerer(model, tokenizer, documents: Iterable[Document] | Mapping[str, Document],
                  retriever: str | Retriever | None = "bm25", top_k: int = 3,
                  teacher: AdapterSource | AdapterStore | None = None, hyper: AdapterSource | AdapterStore | None = None,
                  composition: str = "cat", max_new_tokens: int = 20, batch_size: int = 8, **options) -> Answerer:
    """An Answerer over `documents` (a list, or a mapping by id, taken as is).

    `retriever`: "gold" (each question's own passages), "bm25" or "dense" (built over `documents`; none
    when there are none), "none" or None (vanilla only), or any object with `search(queries, k)`.
    `options`: further Answerer fields (stop_at_answer, mcq_scoring).
    """
    corpus = documents if isinstance(documents, Mapping) else {d.id: d for d in documents}
    gold = retriever == "gold"
    if isinstance(retriever, str) and not gold:
        if retriever == "none" or not corpus:
            retriever = None
        else:
            from inference.retrieval import build_retriever

            retriever = build_retriever(retriever, list(corpus.values()))
    return Answerer(model, tokenizer, corpus, retriever=None if gold else retriever, teacher=teacher, hyper=hyper,
                    top_k=top_k, composition=composition, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    retrieval="gold" if gold else "retriever", **options)
