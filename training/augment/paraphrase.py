"""Rule-based paraphrases (reorder, recombine, move phrases) and the fidelity check for LLM rewrites.

A rule paraphrase never drops content: every sentence of the passage is in it, only the order, the
joins and the position of a leading or trailing time phrase change. Pronouns at sentence starts are
resolved to the title first, so reordering keeps them unambiguous.
"""

from __future__ import annotations

import random
import re

from hyperprag.core.data import Document
from training.augment.facts import ENTITY_KINDS, YEAR, DocFacts, analyze
from training.augment.text import contains, lower_first, token_similarity, upper_first

NEAR_COPY = 0.9  # token similarity at or above which a rewrite counts as a copy of the passage
MIN_LENGTH_RATIO = 0.5  # a rewrite shorter than this fraction of the passage (in words) lost content

_FRONT_RE = re.compile(r"^(In|On|During|By|After|Before|Since|From|At|Until)\s+([^,]{1,60}),\s+(.+?)([.!?])$")
_TAIL_RE = re.compile(rf"^(.+?)\s+(in|on|during)\s+((?:[A-Z][a-z]+\.?\s+)?(?:\d{{1,2}},?\s+)?{YEAR})"
                      rf"((?:\s+[^,;]+?)?)([.!?])$")


def _split_end(sentence: str) -> tuple[str, str]:
    m = re.search(r"[.!?]+[\"”’')\]]*$", sentence)
    return (sentence[:m.start()], sentence[m.start():]) if m else (sentence, ".")


def move_time_phrase(sentence: str) -> str | None:
    """ "In 2008, the band formed." <-> "The band formed in 2008 (...)." (None if neither applies)."""
    m = _FRONT_RE.match(sentence)
    if m:
        prep, phrase, rest, end = m.groups()
        return f"{upper_first(rest)} {prep.lower()} {phrase}{end}"
    m = _TAIL_RE.match(sentence)
    if m and not re.search(r"[,;]|\b(?:who|which|that|and|but|where|when)\b", m.group(1)):  # simple clauses only
        rest, prep, phrase, tail, end = m.groups()
        return f"{prep.capitalize()} {phrase}, {lower_first(rest)}{tail}{end}"
    return None


def swap_and_clauses(sentence: str) -> str | None:
    """ "X, and Y." -> "Y, and x." when the sentence has exactly one ", and " between two clauses."""
    body, end = _split_end(sentence)
    parts = body.split(", and ")
    if len(parts) != 2 or min(len(p.split()) for p in parts) < 3:
        return None
    first, second = parts
    return f"{upper_first(second)}, and {lower_first(first)}{end}"


def join_sentences(a: str, b: str) -> str:
    """Two sentences as one, joined with a semicolon."""
    body, _ = _split_end(a)
    return f"{body}; {lower_first(b)}"


def _variant(sentences: list[str], rng: random.Random) -> str:
    out = [sentences[0]]
    rest = list(sentences[1:])
    rng.shuffle(rest)  # the first sentence introduces the subject; it stays first
    out += rest
    changed = []
    for s in out:
        ops = [op for op in (move_time_phrase, swap_and_clauses) if op(s) is not None]
        if ops and rng.random() < 0.7:
            s = rng.choice(ops)(s) or s
        changed.append(s)
    joined: list[str] = []
    i = 0
    while i < len(changed):
        if i + 1 < len(changed) and rng.random() < 0.35:
            joined.append(join_sentences(changed[i], changed[i + 1]))
            i += 2
        else:
            joined.append(changed[i])
            i += 1
    return " ".join(joined)


def paraphrase(document: Document | str, n: int = 2, seed: int = 0, facts: DocFacts | None = None) -> list[str]:
    """Up to `n` distinct rule paraphrases of the passage text, each keeping every sentence's content.

    Fewer than `n` (possibly none) when the passage allows no distinct variant, e.g. one sentence that no
    rule applies to: a copy of the passage is never returned as a paraphrase.
    """
    facts = facts if facts is not None else analyze(document)
    original = document.text if isinstance(document, Document) else document
    if not facts.sentences or n <= 0:
        return []
    out: list[str] = []
    seen = {" ".join(original.split())}
    for i in range(n):
        rng = random.Random(f"{seed}-{i}")
        text = _variant(facts.sentences, rng)
        for _ in range(8):  # a few more draws if this one repeats the passage or an earlier paraphrase
            if text not in seen:
                break
            text = _variant(facts.sentences, rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def rewrite_problem(facts: DocFacts, original: str, rewrite: str) -> str | None:
    """Why an LLM rewrite is not acceptable ("code: detail"), or None when it keeps every fact."""
    text = rewrite.strip()
    if not text:
        return "rewrite_empty: no text"
    if len(text.split()) < MIN_LENGTH_RATIO * len(original.split()):
        return f"rewrite_too_short: {len(text.split())} words for {len(original.split())}"
    missing = [sp.text for sp in facts.spans if sp.kind in ENTITY_KINDS and not contains(text, sp.text)]
    if missing:
        return f"rewrite_missing_span: {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    sim = token_similarity(original, text)
    if sim >= NEAR_COPY:
        return f"rewrite_near_copy: similarity {sim:.2f}"
    return None
