"""The five medical multiple-choice sets (MIRAGE's) as documents to inject and a corpus to retrieve from.

PubMedQA's questions come with their own abstract (its sections as passages) and BioASQ's with snippets:
a question's passages, joined in order, become one document, the knowledge that prag/hyper inject and rag
puts in context (found by gold retrieval). MedQA, MedMCQA and MMLU-Med have no passages: they retrieve
from one medical corpus, the PubMedQA abstracts and the BioASQ snippets pooled and deduplicated by
content. `option_support` says how much that corpus covers a question: how many of the gold option's words
the retrieved passages hold, against the wrong options'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from hyperprag.core.data import Document, Passage, Question, load_questions, unique_by_content
from hyperprag.core.metrics import normalize_answer

SETS: dict[str, str] = {"pubmedqa": "pubmedqa.jsonl", "bioasq": "bioasq_yesno.jsonl", "medqa": "medqa.jsonl",
                        "medmcqa": "medmcqa.jsonl", "mmlu-med": "mmlu_med.jsonl"}
"""Set name -> its file in the shared data's medical/ folder."""
OWN_DOCUMENT_SETS = ("pubmedqa", "bioasq")
"""Sets whose questions carry their own passages (the document of each question)."""
OWN_TITLES = {"pubmedqa": "Abstract", "bioasq": "Snippets"}
MAX_DOCUMENT_CHARS = 3000
"""A question's own document is cut at this many characters (BioASQ's longest snippet lists; ~700 tokens)."""


def load_set(folder: str | Path, name: str) -> list[Question]:
    """The questions of one medical set, in file order."""
    if name not in SETS:
        raise ValueError(f"unknown medical set {name!r}; choose from {', '.join(SETS)}")
    return list(load_questions(Path(folder) / SETS[name]))


def own_document(q: Question, title: str, max_chars: int = MAX_DOCUMENT_CHARS) -> Question:
    """The question with its passages joined into one supporting passage (PubMedQA's sections keep their
    names: "Methods: ..."; numeric titles such as BioASQ's PubMed ids are left out)."""
    parts = [f"{p.title}: {p.text}" if p.title and not p.title.isdigit() else p.text for p in q.passages]
    text = " ".join(parts)
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    if not text:
        raise ValueError(f"question {q.id} has no passages to make its document from")
    return replace(q, passages=[Passage(title, text, True)])


def own_documents(questions: Sequence[Question], name: str) -> tuple[list[Question], list[Document]]:
    """(questions with one passage each, the corpus of those passages) for a set in OWN_DOCUMENT_SETS."""
    qs = [own_document(q, OWN_TITLES[name]) for q in questions]
    docs = unique_by_content(Document("", p.title, p.text) for q in qs for p in q.passages)
    return qs, docs


def medical_corpus(pubmedqa: Iterable[Question], bioasq: Iterable[Question]) -> list[Document]:
    """Every PubMedQA abstract (one document each) and every BioASQ snippet, deduplicated by content."""
    abstracts = (Document("", p.title, p.text) for q in pubmedqa for p in own_document(q, OWN_TITLES["pubmedqa"],
                                                                                         max_chars=10**9).passages)
    snippets = (Document("", "", p.text) for q in bioasq for p in q.passages if p.text.strip())
    return unique_by_content([*abstracts, *snippets])


def _words(text: str) -> set[str]:
    return {w for w in normalize_answer(text).split() if len(w) > 2}


def option_support(q: Question, passages: Sequence[str]) -> tuple[float, float]:
    """(share of the gold option's words found in `passages`, the same averaged over the wrong options):
    retrieval that covers the question finds more of the right option than of the others."""
    if not q.options:
        raise ValueError(f"question {q.id} has no options")
    found = set().union(*(_words(p) for p in passages)) if passages else set()

    def share(text: str) -> float:
        words = _words(text)
        return len(words & found) / len(words) if words else 0.0

    gold = q.answers[0]
    wrong = [share(t) for k, t in q.options.items() if k != gold]
    return share(q.options[gold]), sum(wrong) / len(wrong) if wrong else 0.0


def chance(questions: Sequence[Question]) -> tuple[float, float]:
    """(accuracy of a uniform guess, accuracy of always answering the most frequent gold letter)."""
    uniform = sum(1 / len(q.options) for q in questions) / len(questions)
    counts: dict[str, int] = {}
    for q in questions:
        counts[q.answers[0]] = counts.get(q.answers[0], 0) + 1
    return uniform, max(counts.values()) / len(questions)
