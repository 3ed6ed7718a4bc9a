"""What augmentation produces per document: rewrites and QA pairs, JSON-able for the cache and the teacher."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

AUGMENT_SOURCES = ("rules", "llm")
"""Where augmentation's QA pairs come from: the rule-based facts or the small instruction model."""
SOURCES = (*AUGMENT_SOURCES, "given")
"""Every QAPair source; "given" is a question file's question about the document (never augmentation's)."""


@dataclass(frozen=True)
class QAPair:
    """One training question; `answer` is short (a span of the passage), `full_answer` a whole sentence."""

    question: str
    answer: str
    full_answer: str
    source: str  # "rules" or "llm"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"QAPair.source must be one of {SOURCES}, got {self.source!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QAPair:
        return cls(question=d["question"], answer=d["answer"], full_answer=d.get("full_answer", ""),
                   source=d["source"])


@dataclass
class Augmentation:
    """Everything the teacher learns one document from.

    `qa` is ordered so that any prefix covers as many facts as it can (one rule question per fact first).
    `failures` holds "code: detail" strings (e.g. "llm_qa_short: 1/3 grounded pairs after 3 attempts");
    `coverage` says which fact-bearing spans of the passage some QA pair answers (see facts.coverage).
    """

    doc_id: str
    content_hash: str
    rewrites: list[str] = field(default_factory=list)
    qa: list[QAPair] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    coverage: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"doc_id": self.doc_id, "content_hash": self.content_hash, "rewrites": list(self.rewrites),
                "qa": [q.to_dict() for q in self.qa], "failures": list(self.failures),
                "coverage": self.coverage}

    @classmethod
    def from_dict(cls, d: dict) -> Augmentation:
        return cls(doc_id=d["doc_id"], content_hash=d["content_hash"], rewrites=list(d.get("rewrites", [])),
                   qa=[QAPair.from_dict(q) for q in d.get("qa", [])], failures=list(d.get("failures", [])),
                   coverage=dict(d.get("coverage", {})))


def failure_code(failure: str) -> str:
    """The reason code of a "code: detail" failure string."""
    return failure.split(":", 1)[0].strip()
