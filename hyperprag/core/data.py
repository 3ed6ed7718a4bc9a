"""Question and corpus records: the project's one JSONL schema (see README, "Data schema")."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


class DataError(ValueError):
    """A bad input record; the message names the file, the line and the field."""

    def __init__(self, path: str, line: int | None, field_name: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field_name, problem
        where = self.path + (f", line {line}" if line is not None else "")
        what = f"field {field_name!r}: " if field_name else ""
        super().__init__(f"{where}: {what}{problem}")


@dataclass(frozen=True)
class Passage:
    title: str
    text: str
    supporting: bool = False


@dataclass(frozen=True)
class Document:
    """One corpus entry: what gets retrieved and what gets its own adapter."""

    id: str
    title: str
    text: str

    @property
    def content_hash(self) -> str:
        """Stable key of the content (title + text), used to cache augmentations and adapters."""
        return hashlib.sha256(f"{self.title}\n{self.text}".encode()).hexdigest()[:16]

    @property
    def full_text(self) -> str:
        return f"{self.title}: {self.text}" if self.title else self.text


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: list[str]  # answers[0] is the gold answer, the rest aliases (for MC: [letter, option text])
    dataset: str = ""
    type: str | None = None
    passages: list[Passage] = field(default_factory=list)
    options: dict[str, str] | None = None  # multiple choice: letter -> option text
