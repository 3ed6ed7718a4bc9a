"""Answer scoring: SQuAD/HotpotQA exact match and token F1, answer extraction, multiple-choice accuracy."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

from hyperprag.core.data import Question
from hyperprag.core.prompts import ANSWER_PREFILL

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_YES_NO = ("yes", "no", "noanswer")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb*"
# A sentence ends at . ! ? before whitespace, except after an initial ("J. K.") or a common abbreviation.
_ABBREV = r"(?<!\b[A-Z])(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bJr)(?<!\bSr)(?<!\bMt)(?<!\bvs)(?<!\bNo)"
_SENT_END = re.compile(_ABBREV + r"[.!?](?=\s|$)")
_LEADING = re.compile(r"^(?:\s|:|that(?=\s))+", re.IGNORECASE)


def normalize_answer(s: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation and the articles a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _as_list(answers: str | Sequence[str]) -> list[str]:
    out = [answers] if isinstance(answers, str) else list(answers)
    if not out:
        raise ValueError("no gold answers to score against")
    return out


def exact_match(pred: str, answers: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer or alias."""
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(a) for a in _as_list(answers)))


def _f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred), normalize_answer(gold)
    # HotpotQA's official guard: yes/no/noanswer must match exactly, no partial credit.
    if (p in _YES_NO or g in _YES_NO) and p != g:
        return 0.0
    pt, gt = p.split(), g.split()
    common = sum((Counter(pt) & Counter(gt)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pt), common / len(gt)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, answers: str | Sequence[str]) -> float:
    """Token-level F1 of normalized answers, the max over the gold answer and its aliases."""
    return max(_f1(pred, a) for a in _as_list(answers))


def _strip_prefill(text: str) -> str:
    s = text.strip()
    if s.lower().startswith(ANSWER_PREFILL.lower()):
        s = s[len(ANSWER_PREFILL):]
    return s


def extract_answer(generated_text: str) -> str:
    """The short answer in a continuation of the "The answer is" pre-fill: its first line and sentence,
    without a leading ":"/"that", surrounding quotes or the final period."""
    s = _strip_prefill(generated_text).lstrip()
    s = s.split("\n", 1)[0]
    m = _SENT_END.search(s)
    if m:
        s = s[:m.start()]
    prev = None
    while s != prev:
        prev = s
        s = _LEADING.sub("", s).strip().strip(_QUOTES).strip().rstrip(".").strip()
    return s


def answer_is_final(generated_text: str) -> bool:
    """True once more generated text cannot change `extract_answer(generated_text)`: the first line has
    ended, or its first sentence end is followed by another character (a bare final "." could still turn
    out to be part of "3.5"). Generation can stop there (inference/generate.py, stop_at_answer)."""
    s = _strip_prefill(generated_text).lstrip()
    if "\n" in s:
        return True
    m = _SENT_END.search(s)
    return m is not None and m.end() < len(s)


_LETTER_FORMS = [re.compile(p, re.IGNORECASE) for p in (
    r"^\(?([A-Z])\)?[.:)]?$",             # "B", "(B)", "B.", "B)"
    r"^\(([A-Z])\)",                       # "(B) text"
    r"^([A-Z])[.:)](?:\s|$)",              # "B. text", "B: text", "B) text"
    r"^option\s*\(?([A-Z])\b\)?",          # "option B", "Option (B)"
)]


def extract_choice(text: str, options: dict[str, str]) -> str | None:
    """The option letter a generation picks: a letter ("B", "(B)", "B.", "option B") or an option's text;
    None when neither is recognisable."""
    s = _LEADING.sub("", _strip_prefill(text)).strip().strip(_QUOTES).strip()
    first = s.split("\n", 1)[0].strip()
    letters = {k.upper(): k for k in options}
    for pat in _LETTER_FORMS:
        m = pat.match(first)
        if m and m.group(1).upper() in letters and (pat is not _LETTER_FORMS[0] or m.group(1).isupper()):
            return letters[m.group(1).upper()]
    # The option's text: the normalized answer equals it or starts with it; the longest such option wins.
    norm = normalize_answer(first)
    best, best_len = None, -1
    for k, v in options.items():
        nv = normalize_answer(v)
        if nv and (norm == nv or norm.startswith(nv + " ")) and len(nv) > best_len:
            best, best_len = k, len(nv)
    if best is not None:
        return best
    m = re.match(r"^([B-Z])\b", first)  # "B because ..." ("A ..." and "I ..." are too often words)
    if m and m.group(1) in letters:
        return letters[m.group(1)]
    return None


def choice_accuracy(pred: str, options: dict[str, str], gold_letter: str) -> float:
    """1.0 if the generation picks the gold option."""
    return float(extract_choice(pred, options) == gold_letter)


def wilson_interval(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of an accuracy of `correct` out of `n` (95% at z = 1.96): unlike the
    normal approximation it stays inside [0, 1] and is honest at small n and extreme rates."""
    if n <= 0:
        raise ValueError("an interval needs at least one question")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def contains_answer(text: str, answers: str | Sequence[str]) -> float:
    """1.0 if a normalized gold answer or alias occurs as whole words in the normalized text (a lenient
    accuracy used for long or chatty generations)."""
    t = f" {normalize_answer(text)} "
    return float(any(n and f" {n} " in t for n in map(normalize_answer, _as_list(answers))))


def score(prediction: str, question: Question, extract: bool = True) -> dict[str, float]:
    """Numeric scores of one answer: {"em", "f1", "contains"} for open questions, {"acc"} for multiple
    choice (answers[0] the gold letter). `extract` first cuts the short answer out of a raw continuation
    (a no-op on an answer already extracted)."""
    if question.options:
        return {"acc": choice_accuracy(prediction, question.options, question.answers[0])}
    pred = extract_answer(prediction) if extract else prediction
    return {"em": exact_match(pred, question.answers), "f1": token_f1(pred, question.answers),
            "contains": contains_answer(pred, question.answers)}
