"""Building config dataclasses from plain mappings (YAML, JSON manifests) with a clear unknown-field error."""

from __future__ import annotations

from dataclasses import fields
from typing import TypeVar

T = TypeVar("T")


def from_known_fields(cls: type[T], d: dict, what: str | None = None) -> T:
    """`cls(**d)`, naming unknown keys and the known ones (a typo in a config gets a useful message)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what or cls.__name__} fields {unknown}; known: {sorted(known)}")
    return cls(**d)
