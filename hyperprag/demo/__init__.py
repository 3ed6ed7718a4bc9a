"""hyperprag's own demo data: invented documents the base model cannot know, with questions about them.

Files (JSONL, the project schema; see README.md here):
    train/corpus.jsonl, train/questions.jsonl    40 documents, 80 questions (a hypernetwork learns from these)
    unseen/corpus.jsonl, unseen/questions.jsonl  20 documents, 40 questions (held out from hypernetwork training)
    general.jsonl                                12 general-knowledge questions the base model answers closed-book
"""

from __future__ import annotations

from pathlib import Path

from hyperprag.core.data import Document, Question, load_corpus, load_questions

SPLITS = ("train", "unseen")


def demo_dir() -> Path:
    """The folder that holds the demo files (inside the installed package)."""
    return Path(__file__).resolve().parent


def corpus_path(split: str = "train") -> Path:
    """Path of a demo split's corpus.jsonl ('train' or 'unseen')."""
    if split not in SPLITS:
        raise ValueError(f"unknown demo split {split!r}; expected one of {SPLITS}")
    return demo_dir() / split / "corpus.jsonl"


def questions_path(split: str = "train") -> Path:
    """Path of a demo split's questions ('train', 'unseen' or 'general')."""
    if split == "general":
        return demo_dir() / "general.jsonl"
    if split not in SPLITS:
        raise ValueError(f"unknown demo split {split!r}; expected one of {(*SPLITS, 'general')}")
    return demo_dir() / split / "questions.jsonl"


def load_demo_corpus(split: str = "train") -> list[Document]:
    """The documents of one demo split ('train' or 'unseen'), validated by the project loader."""
    return list(load_corpus(corpus_path(split)))


def load_demo_questions(split: str = "train") -> list[Question]:
    """The questions of one demo split ('train', 'unseen' or 'general'), validated by the project loader."""
    return list(load_questions(questions_path(split)))
