"""Plain-text helpers for augmentation: sentence splitting, normalization, similarity, pronoun resolution.

No NLP model is available offline (spaCy models are not on PyPI), so these are careful rules.
"""

from __future__ import annotations

import difflib
import re
import string
import unicodedata


def lexicon(text: str) -> frozenset[str]:
    """A word list written as whitespace-separated text."""
    return frozenset(text.split())


# Words that end in "." without ending a sentence (compared lowercased, without the final dot).
ABBREVIATIONS = lexicon("""
mr mrs ms dr st mt ft jr sr prof gen col lt sgt capt cmdr adm maj rev hon gov sen rep pres messrs
inc ltd co corp bros dept univ assn ave blvd rd est
vs etc e.g i.e cf al approx ca c fl no nos vol vols pp p fig ed eds op
jan feb mar apr jun jul aug sep sept oct nov dec
u.s u.k u.n u.s.a d.c
""")

# Sentence-initial capitalized words that do not start a name.
FUNCTION_WORDS = lexicon("""
the a an in on at of to for from by with without into onto upon over under after before during since until
as although though while when whenever where whereas if unless because but and or nor so yet thus hence also
however moreover furthermore meanwhile then there here this that these those it its he she they we i you
his her their our my your him them us who whom whose which what why how
both either neither each every all any some many most much several few other another such no not only
following according despite unlike like between among within throughout against toward towards across
currently originally initially formerly later earlier today now once nearly about around approximately
born located founded based known named called set
""")

ARTICLES = frozenset({"a", "an", "the"})
_PUNCT_TABLE = str.maketrans({c: " " for c in string.punctuation + "“”‘’–—…"})
_WORD_RE = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)
_BOUNDARY_RE = re.compile(r"[.!?]+[\"”’')\]]*(?=\s)")


def _is_abbreviation(word: str) -> bool:
    """`word` (the text before a '.', leading quotes/brackets removed) is an abbreviation or an initial."""
    w = word.lstrip("\"“'‘([")
    if not w:
        return False
    if re.fullmatch(r"[A-Z]", w):  # an initial: "J. R. R. Tolkien"
        return True
    if re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", w):  # "U.S", "e.g"
        return True
    return w.lower() in ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
    """Split into sentences on . ! ? followed by space and a capital/digit/quote, not after abbreviations."""
    sentences: list[str] = []
    for block in re.split(r"\n+", text):
        start = 0
        for m in _BOUNDARY_RE.finditer(block):
            rest = block[m.end():].lstrip()
            if not rest or not (rest[0].isupper() or rest[0].isdigit() or rest[0] in "\"“'‘("):
                continue
            if m.group().startswith(".") and len(m.group().rstrip("\"”’')]")) == 1:
                before = block[start:m.start()].rsplit(None, 1)
                if before and _is_abbreviation(before[-1]):
                    continue
            sentences.append(block[start:m.end()].strip())
            start = m.end()
        tail = block[start:].strip()
        if tail:
            sentences.append(tail)
    return [s for s in sentences if s]


def normalize(text: str) -> str:
    """Lowercase, drop punctuation and articles, unify digit groups: for answer matching (SQuAD-style)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    text = text.translate(_PUNCT_TABLE)
    return " ".join(w for w in text.split() if w not in ARTICLES)


def contains(haystack: str, needle: str) -> bool:
    """`needle` occurs in `haystack` as whole words, after normalization."""
    n = normalize(needle)
    return bool(n) and f" {n} " in f" {normalize(haystack)} "


def words(text: str) -> list[str]:
    """Lowercased word tokens."""
    return [w.lower() for w in _WORD_RE.findall(unicodedata.normalize("NFKC", text))]


def token_similarity(a: str, b: str) -> float:
    """Token-level similarity in [0, 1] (difflib ratio over word sequences): near-copies score near 1."""
    return difflib.SequenceMatcher(None, words(a), words(b), autojunk=False).ratio()


def title_core(title: str) -> str:
    """The title without a trailing disambiguation: "Extended Play (Pretenders EP)" -> "Extended Play"."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", title).strip() or title.strip()


def lower_first(text: str) -> str:
    """Lowercase the first word if it is a function word ("The bridge" -> "the bridge"); keep names."""
    first = text.split(" ", 1)[0]
    if first.lower() in FUNCTION_WORDS and not (first.isupper() and len(first) > 1):
        return text[0].lower() + text[1:]
    return text


def upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


_SUBJECT_PRONOUN = re.compile(r"^(He|She|It|They)\b(?!')")
_POSSESSIVE_PRONOUN = re.compile(r"^(His|Her|Its|Their)\b")


def is_person_text(text: str) -> bool:
    """A passage about a person: "(born"/"died" or he/she pronouns outnumbering it/its/they."""
    if re.search(r"\((?:born|b\.)\s|\bwas born\b|\(died\b", text):
        return True
    ws = words(text)
    personal = sum(ws.count(p) for p in ("he", "she", "his", "her", "him"))
    neuter = sum(ws.count(p) for p in ("it", "its", "they", "their"))
    return personal > neuter


def resolve_pronouns(sentences: list[str], subject: str, person: bool) -> list[str]:
    """Replace a sentence-initial pronoun with the subject ("He was born" -> "Ada Lovelace was born").

    Only pronouns that fit the passage's subject are replaced (he/she in a person's passage, it/they
    otherwise), and never in the first sentence, which names the subject itself.
    """
    if not subject:
        return list(sentences)
    out = [sentences[0]] if sentences else []
    subj_words = ("He", "She") if person else ("It", "They")
    poss_words = ("His", "Her") if person else ("Its", "Their")
    possessive = subject + ("'" if subject.endswith("s") else "'s")
    for s in sentences[1:]:
        m = _SUBJECT_PRONOUN.match(s)
        if m and m.group(1) in subj_words:
            s = subject + s[m.end():]
        else:
            m = _POSSESSIVE_PRONOUN.match(s)
            if m and m.group(1) in poss_words:
                s = possessive + s[m.end():]
        out.append(s)
    return out
