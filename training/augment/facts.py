"""Rule-based fact spans and fact-covering questions, so augmentation never depends on a capable model.

A span is a fact-bearing piece of one sentence: a name, date, year, number with unit, count, place,
quoted title, colour/material, or (per sentence) the description after "X is a ..." and, for sentences
with nothing else, a trailing clause. Every span becomes the answer of up to three questions (a
wh-question, a cloze and a "complete the fact" prompt), each naming the document's title so it can be
answered closed-book.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hyperprag.core.data import Document
from hyperprag.core.prompts import (
    CLOZE_BLANK,
    CLOZE_QUESTION,
    CLOZE_QUESTION_NO_TITLE,
    COMPLETE_QUESTION,
    COMPLETE_QUESTION_NO_TITLE,
    CONTEXT_QUESTION,
)
from training.augment.records import AUGMENT_SOURCES, QAPair
from training.augment.text import (
    ABBREVIATIONS,
    FUNCTION_WORDS,
    contains,
    is_person_text,
    lexicon,
    lower_first,
    normalize,
    resolve_pronouns,
    split_sentences,
    title_core,
    upper_first,
    words,
)

# ----------------------------------------------------------------------------------------------------------
# Lexicons and patterns
# ----------------------------------------------------------------------------------------------------------

_MONTH_NAMES = lexicon("January February March April May June July August September October November December")
MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December|" \
        r"(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\.)"
DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
YEAR = r"(?:1\d{3}|20\d{2})"
NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_UNITS_1_9 = "one|two|three|four|five|six|seven|eight|nine"
NUMWORD = (r"(?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:-(?:" + _UNITS_1_9 + r"))?|"
           r"two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
           r"seventeen|eighteen|nineteen|a dozen|dozens of|hundreds of|thousands of|millions of)")
SCALE = r"(?:hundred|thousand|million|billion|trillion)"
UNITS = sorted(lexicon("""
km kilometres kilometers kilometre kilometer m metres meters metre meter cm centimetres centimeters mm
millimetres millimeters mi miles mile ft feet foot inches inch yards yd
km2 km² sq_mi square_miles square_kilometres square_kilometers square_metres square_meters square_feet
hectares ha acres acre
kg kilograms kilogram grams gram lb lbs pounds tons tonnes tonne
mph km/h kph knots °C °F degrees
years year months month weeks week days day hours hour minutes minute seconds
decades centuries
MW GW kW kWh Hz kHz MHz GHz KB MB GB TB bits bytes
litres liters gallons ml barrels
dollars euros yen rupees francs
percent per_cent
""".replace("_", " ")), key=len, reverse=True)
UNIT = "|".join(re.escape(u) for u in UNITS)
COLOURS = sorted(lexicon("red orange yellow green blue purple violet pink brown black white grey gray golden crimson scarlet "
           "turquoise beige ivory maroon navy"))
MATERIALS = sorted(lexicon("wood wooden stone granite marble limestone sandstone brick steel iron concrete glass bronze copper "
             "brass gold silver aluminium aluminum timber clay ceramic plastic leather cotton wool silk oak pine "
             "cedar porcelain"))
CONNECTORS = lexicon("of the de da del della der di du van von la le y al bin ibn for upon &")
PLACE_PREPS = frozenset({"in", "at", "near", "from"})
TIME_PREPS = frozenset({"in", "on", "during"})
PERSON_CUES = lexicon("""
by starring featuring feat. actor actress singer director producer writer author rapper musician composer
guitarist drummer bassist vocalist keyboardist president king queen prince princess sir lord lady dame
dr. mr. mrs. ms. saint pope emperor empress general captain wife husband son daughter brother sister father
mother married coach manager minister senator governor mayor chancellor founder co-founder ceo chairman
poet novelist artist painter sculptor scientist physicist chemist journalist comedian presenter
""")
OCCUPATIONS = lexicon("""
actor actress singer director producer writer author rapper musician composer guitarist drummer bassist
vocalist keyboardist politician president king queen prince princess footballer player poet novelist
artist painter sculptor scientist physicist chemist biologist mathematician journalist comedian presenter
businessman businesswoman entrepreneur lawyer judge engineer architect philosopher historian economist
inventor explorer soldier officer general admiral model dancer choreographer screenwriter playwright
filmmaker photographer designer chef athlete coach manager broadcaster activist priest bishop monk
songwriter singer-songwriter dj disc actress television personality
""")
HONORIFICS = lexicon("dr. mr. mrs. ms. sir dame lord lady prof. rev. saint st. king queen prince princess")
ORG_WORDS = lexicon("""
records inc inc. ltd company university college school institute press studios pictures entertainment
group band corporation books publishing films music network council party club fc association society
museum theater theatre church cathedral bridge river street road avenue park lake mountain mount island
county city state province district airport station hotel hall tower castle palace center centre
stadium arena league cup award awards prize festival war battle army navy air force ministry department
resort ballroom hotel motel gallery library hospital station tour
""")
PLACE_STARTERS = lexicon("New North South East West United Northern Southern Saint San Santa Los Las El Sri Costa "
                           "Puerto Hong Rhode Cape Port Fort Mount Lake")
IRREGULAR_PARTICIPLES = lexicon("known born made built written given taken seen held led won sold told found set "
                                  "run begun drawn grown shown sung based located")
NATIONALITY = lexicon("""
French Dutch Greek Thai Swiss Welsh Irish Scottish English British Czech Danish Swedish Finnish Polish
Turkish Spanish Kurdish Jewish Basque Icelandic Norwegian Flemish Cornish Manx Maltese Lebanese Chinese
Japanese Vietnamese Portuguese Taiwanese Burmese Nepalese Congolese Senegalese Sudanese Iraqi Israeli
Pakistani Saudi Kuwaiti Qatari Emirati Bangladeshi Filipino Argentine Arabic Hispanic Latino Nordic
""")
_NATIONALITY_SUFFIX = re.compile(r"^[A-Z][a-z]+(?:ian|ean|an|ese|ish)$")
_PLURAL_IRREGULAR = lexicon("people men women children staff personnel cattle sheep fish police crew")
_NOT_COUNTED = lexicon("of and or to in on at by for is was are were the a an as than from with per")
_STOP_PREPS = lexicon("in at on by from with for during since after before under to into near between "
                        "until about as through within across over against")
_RELATIVES = lexicon("who which that where whose whom when while but whereas although though")
_AUX = r"is|was|are|were"

_DATE_RES = [re.compile(p) for p in (
    rf"\b(?P<s>{MONTH}\s+{DAY}\s*[–-]\s*{DAY},?\s+{YEAR})\b",
    rf"\b(?P<s>{MONTH}\s+{DAY},?\s+{YEAR})\b",
    rf"\b(?P<s>{DAY}\s+(?:of\s+)?{MONTH}\s*,?\s+{YEAR})\b",
    rf"\b(?P<s>{MONTH},?\s+{YEAR})\b",
    rf"\b(?P<s>{MONTH}\s+{DAY})\b(?!,?\s*\d)",
    rf"\b(?P<s>{DAY}\s+(?:of\s+)?{MONTH})",
    r"\b(?P<s>\d{4}-\d{2}-\d{2})\b",
    rf"\b(?:in|since|until|during|early|late|mid-?)\s+(?P<s>{MONTH})(?!\s*\d)",
)]
_QUANTITY_RES = [re.compile(p) for p in (
    rf"(?P<s>(?:[$£€¥]|\b(?:US\$|EUR|USD|GBP|CHF|JPY|AUD|CAD)\s?)\s?{NUM}(?:\s{SCALE})?(?:\s(?:{UNIT})\b)?)",
    rf"(?<![\w.,])(?P<s>{NUM}(?:\s?%|\s(?:per\s?cent|percent)\b))",
    rf"(?<![\w.,])(?P<s>(?:{NUM}|{NUMWORD})(?:[\s-]{SCALE})?[\s-](?:{UNIT})(?![\w/]))",
    rf"(?<![\w.,])(?P<s>{NUM}\s{SCALE})\b(?!\s+[a-z]+s\b)",
)]
_TIME_RE = re.compile(r"(?<![\w:])(?P<s>\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?)(?![\w:])")
_COUNT_RE = re.compile(rf"(?<![\w.,$£€])(?P<s>(?:{NUM}|{NUMWORD})(?:\s{SCALE})?)\s+(?P<noun>[A-Za-z][a-z\-]*[a-z])\b",
                       re.IGNORECASE)
_ORDINAL_RE = re.compile(r"(?<![\w.])(?P<s>\d+(?:st|nd|rd|th))\b(?:\s+(?P<noun>[a-z]+))?")
_DECADE_RE = re.compile(r"(?<![\w'’])(?P<s>(?:(?:1\d|20)\d0|['’]\d0)['’]?s)\b")
_YEAR_RE = re.compile(rf"(?<![\d,.$£€])\b(?P<s>{YEAR})\b(?!\d|,\d|\.\d|%)")
_NUMBER_RE = re.compile(rf"(?<![\w.,$£€])(?P<s>{NUM})(?![\w%])(?!\.\d)")
_QUOTED_RE = re.compile(r"[\"“](?P<s>[^\"“”]{1,600})[\"”]")
_LEXICON_RE = re.compile(r"\b(?P<s>" + "|".join(COLOURS + MATERIALS) + r")\b")
_TOKEN_RE = re.compile(r"[^\s\"“”()\[\]{},;:!?]+")
_DESCRIPTION_RE = re.compile(rf"^(?P<subj>(?:[^,()]|\([^)]*\))+?)\s+(?P<aux>{_AUX})\s+"
                             rf"(?P<np>(?:an?|the|one of the)\s+\S.*)$")

PRIORITY = {"quoted": 0, "date": 1, "quantity": 2, "time": 2, "count": 3, "ordinal": 4, "decade": 5, "year": 6,
            "number": 7, "place": 8, "person": 8, "nationality": 8, "name": 8, "colour": 9, "material": 9}
TIME_KINDS = frozenset({"date", "year", "decade"})
ATOMIC_KINDS = frozenset(PRIORITY)
ENTITY_KINDS = ATOMIC_KINDS - {"colour", "material"}  # what a rewrite must keep


# ----------------------------------------------------------------------------------------------------------
# Spans
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Span:
    """A fact-bearing piece of sentence `sentence` (char offsets into the pronoun-resolved sentence)."""

    text: str
    kind: str
    sentence: int
    start: int
    end: int
    noun: str = ""  # the counted noun after a count/ordinal ("17 episodes" -> "episodes"), for "how many"
    subject: str = ""  # description spans: the sentence subject ("X" in "X is a ...")
    aux: str = ""  # description spans: the copula

    def to_dict(self) -> dict:
        return {"text": self.text, "kind": self.kind, "sentence": self.sentence}


@dataclass
class DocFacts:
    """A document's sentences (pronouns resolved) and its fact spans."""

    title: str
    subject: str  # the title without its disambiguation
    person: bool  # the passage is about a person
    sentences: list[str]
    spans: list[Span]


@dataclass
class _Token:
    text: str  # the core: trailing "'s" and sentence-final "." removed
    start: int
    end: int
    raw_end: int


def _tokens(sentence: str) -> list[_Token]:
    toks = []
    for m in _TOKEN_RE.finditer(sentence):
        raw = m.group()
        core = re.sub(r"(?:['’]s|['’])$", "", raw)
        if core.endswith(".") and not (re.fullmatch(r"(?:[A-Za-z]\.)+", core) or core[:-1].lower() in ABBREVIATIONS):
            core = core.rstrip(".")
        hy = re.fullmatch(r"([A-Z][\w'’.]*)-[a-z][\w-]*", core)  # "Birmingham-based" -> "Birmingham"
        if hy:
            core = hy.group(1)
        core = core.lstrip("'‘")
        if core:
            start = m.start() + raw.index(core)
            toks.append(_Token(core, start, start + len(core), m.end()))
    return toks


def _is_cap(tok: _Token) -> bool:
    return tok.text[:1].isupper()


def _adjacent(sentence: str, a: _Token, b: _Token) -> bool:
    return a.end == a.raw_end and sentence[a.end:b.start].isspace()


def _possessive(sentence: str, tok: _Token) -> bool:
    return sentence[tok.end:tok.raw_end] in ("'s", "’s")


def _name_sequences(sentence: str, toks: list[_Token]) -> list[tuple[int, int]]:
    """Runs of capitalized tokens (joined by connectors like "of the"), as token index ranges [i, j]."""
    seqs, i, n = [], 0, len(toks)
    while i < n:
        if not _is_cap(toks[i]):
            i += 1
            continue
        end = i
        while True:
            k, conns = end + 1, 0
            while (k < n and conns < 2 and toks[k].text in CONNECTORS and _adjacent(sentence, toks[k - 1], toks[k])):
                k, conns = k + 1, conns + 1
            if k < n and _is_cap(toks[k]) and _adjacent(sentence, toks[k - 1], toks[k]):
                end = k
                continue
            break
        seqs.append((i, end))
        i = end + 1
    # "Cain's Ballroom", "Collector's Choice Records": join over a possessive into a place or organisation
    merged: list[tuple[int, int]] = []
    for i, j in seqs:
        if merged:
            pi, pj = merged[-1]
            if (pj + 1 == i and _possessive(sentence, toks[pj]) and sentence[toks[pj].raw_end:toks[i].start].isspace()
                    and (i == j or toks[j].text.lower() in ORG_WORDS)):
                merged[-1] = (pi, j)
                continue
        merged.append((i, j))
    # "Adam Schlesinger of Fountains of Wayne": a person's name, then what they belong to
    out: list[tuple[int, int]] = []
    for i, j in merged:
        of = next((k for k in range(i + 1, j) if toks[k].text == "of"), None)
        if of is not None and _personish([t.text for t in toks[i:of]]):
            out += [(i, of - 1), (of + 1, j)]
        else:
            out.append((i, j))
    return out


def _personish(names: list[str]) -> bool:
    return (2 <= len(names) <= 4 and all(re.fullmatch(r"[A-Z][\w'’.-]*", w) for w in names)
            and names[-1].lower() not in ORG_WORDS and names[0].lower() not in ORG_WORDS
            and names[0].lower() not in FUNCTION_WORDS and names[0] not in PLACE_STARTERS)


def _is_nationality(names: list[str], prev1: str, after: str) -> bool:
    """ "an American actor", "by English band": a nationality word used as a modifier."""
    last = names[-1]
    if len(names) > 2 or not re.match(r"\s+[a-z]+", after):
        return False
    nxt = after.split()[0]
    if nxt in FUNCTION_WORDS:
        return False
    return last in NATIONALITY or (_NATIONALITY_SUFFIX.match(last) is not None and prev1.islower())


def _place_extension(names: list[str]) -> bool:
    """The second part of "City, State": one word, or two starting like "New Jersey", "United States"."""
    return len(names) == 1 or (len(names) == 2 and names[0] in PLACE_STARTERS)


def _name_candidates(sentence: str, doc_caps: set[str]) -> list[tuple[int, int, str]]:
    """(start, end, kind) for names, places, persons and nationalities in one sentence."""
    toks = _tokens(sentence)
    out: list[tuple[int, int, str]] = []
    seqs = _name_sequences(sentence, toks)
    skip: set[int] = set()
    prev_end, prev_kind = -1, ""
    for si, (i, j) in enumerate(seqs):
        if si in skip:
            continue
        if i == 0 or sentence[:toks[i].start].strip() in {"\"", "“", "("}:
            while i <= j and toks[i].text.lower() in FUNCTION_WORDS:  # "The Orvantis Bridge" -> "Orvantis Bridge"
                i += 1
            if i > j:
                continue
            if i == j and toks[i].start == toks[0].start and toks[i].text not in doc_caps:
                continue  # a lone sentence-initial capital is just a capitalized word
        names = [t.text for t in toks[i:j + 1]]
        if (len(names) == 1 and names[0] in {"I", "A"}) or all(w.lower() in FUNCTION_WORDS for w in names):
            continue
        prev1 = toks[i - 1].text.lower() if i > 0 else ""
        prev2 = toks[i - 2].text.lower() if i > 1 else ""
        after = sentence[toks[j].raw_end:]
        start, end = toks[i].start, toks[j].end
        if len(names) == 1 and names[0] in _MONTH_NAMES:
            out.append((start, end, "date"))
            continue
        modifier = re.match(r"\s+([a-z]+)", after) is not None and after.split()[0] not in FUNCTION_WORDS
        if si + 1 < len(seqs):  # "Birmingham, Alabama": extend over ", State" when it is not a list
            ni, nj = seqs[si + 1]
            if (sentence[toks[j].raw_end:toks[ni].start] == ", " and toks[j].raw_end == toks[j].end
                    and _place_extension([t.text for t in toks[ni:nj + 1]]) and len(names) <= 3
                    and not re.match(r"\s*(?:,|and|or)\s+[A-Z]", sentence[toks[nj].raw_end:])
                    and not re.search(r"(?:,|\band|\()\s*$", sentence[:start])):
                skip.add(si + 1)
                out.append((start, toks[nj].end, "place"))
                prev_end, prev_kind = toks[nj].end, "place"
                continue
        listed = prev_kind == "place" and re.fullmatch(r",\s*(?:and\s+)?|\s+and\s+", sentence[prev_end:start])
        if _is_nationality(names, prev1, after):
            kind = "nationality"
        elif names[0].lower() in HONORIFICS and names[-1].lower() not in ORG_WORDS:
            kind = "person"
        elif (prev1 in PLACE_PREPS or (prev1 == "the" and prev2 in PLACE_PREPS) or listed) and not modifier:
            kind = "place"
        elif _personish(names) and (prev1 in PERSON_CUES or re.match(
                r"\s*(?:\(born|, who\b|who\b|was born|(?:also\s+)?(?:[a-z]+ed|wrote|said|told|became|founded|"
                r"began|won|took|gave|left|led|sang|married|met)\b)", after)):
            kind = "person"
        else:
            kind = "name"
        out.append((start, end, kind))
        prev_end, prev_kind = end, kind
    return out


def _regex_candidates(sentence: str) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, noun) for quoted titles, dates, numbers, colours and materials."""
    out: list[tuple[int, int, str, str]] = []
    for m in _QUOTED_RE.finditer(sentence):
        if len(m.group("s").split()) <= 10 and re.search(r"\w", m.group("s")):
            s = m.group("s").strip().rstrip(",.")
            a = m.start("s") + m.group("s").index(s)
            out.append((a, a + len(s), "quoted", ""))
    for pat in _DATE_RES:
        out.extend((m.start("s"), m.end("s"), "date", "") for m in pat.finditer(sentence))
    for pat in _QUANTITY_RES:
        out.extend((m.start("s"), m.end("s"), "quantity", "") for m in pat.finditer(sentence))
    out.extend((m.start("s"), m.end("s"), "time", "") for m in _TIME_RE.finditer(sentence))
    for m in _COUNT_RE.finditer(sentence):
        noun, num = m.group("noun"), m.group("s")
        plural = noun.endswith("s") and not noun.endswith("ss") or noun in _PLURAL_IRREGULAR
        year_like = re.fullmatch(YEAR, num) is not None and re.search(
            r"\b(?:in|since|of|by|from|during|until|the|to|and)\s+$", sentence[:m.start("s")], re.IGNORECASE) is not None
        if noun.islower() and plural and noun not in _NOT_COUNTED and not year_like and num.lower() != "one":
            out.append((m.start("s"), m.end("s"), "count", noun))
    for m in _ORDINAL_RE.finditer(sentence):
        out.append((m.start("s"), m.end("s"), "ordinal", m.group("noun") or ""))
    out.extend((m.start("s"), m.end("s"), "decade", "") for m in _DECADE_RE.finditer(sentence))
    out.extend((m.start("s"), m.end("s"), "year", "") for m in _YEAR_RE.finditer(sentence))
    out.extend((m.start("s"), m.end("s"), "number", "") for m in _NUMBER_RE.finditer(sentence))
    for m in _LEXICON_RE.finditer(sentence):
        out.append((m.start("s"), m.end("s"), "colour" if m.group("s") in COLOURS else "material", ""))
    return out


def _description(sentence: str) -> tuple[int, int, str, str] | None:
    """The object of a sentence-initial "X is a/an/the ...": (start, end, subject, aux), cut at clauses."""
    m = _DESCRIPTION_RE.match(sentence)
    if not m:
        return None
    subject = re.sub(r"\s*\([^)]*\)", "", m.group("subj")).strip()
    if not subject or len(subject.split()) > 10:
        return None
    base = m.start("np")
    toks = list(re.finditer(r"\S+", m.group("np")))
    end = None
    for k, t in enumerate(toks):
        w = t.group().strip(".,;:!?\"”)").lower()
        if k >= 2 and (w in _STOP_PREPS or w in _RELATIVES or (w == "and" and k + 1 < len(toks) and toks[k + 1]
                                                                  .group().lower() in {"is", "was", "has", "had"})):
            prev = toks[k - 1].group().lower()
            participle = prev.endswith(("ed", "en")) or prev in IRREGULAR_PARTICIPLES
            cut = k - 1 if (k - 1 >= 2 and participle and w in _STOP_PREPS) else k
            end = toks[cut - 1].end()
            break
        if k >= 12:
            end = toks[k - 1].end()
            break
        if t.group().endswith((",", ";")) and k >= 1:
            nxt = toks[k + 1].group() if k + 1 < len(toks) else ""
            if not nxt[:1].isupper() or nxt.strip(".,").lower() in _RELATIVES:
                end = t.end()
                break
    if end is None:
        end = toks[-1].end()
    text = m.group("np")[:end]
    text = text.rstrip(" .,;:!?\"”")
    if len(text.split()) < 2:
        return None
    return base, base + len(text), subject, m.group("aux")


def _clause(sentence: str) -> tuple[int, int] | None:
    """A trailing clause as the fallback fact of a sentence with no other span."""
    body = sentence.rstrip(" .!?\"”'’)")
    toks = list(re.finditer(r"\S+", body))
    if len(toks) < 4:
        return None
    comma = body.rfind(", ")
    if comma > len(body) // 2 and 2 <= len(body[comma + 2:].split()) <= 10:
        return comma + 2, len(body)
    k = max(2, min(8, len(toks) // 2))
    return toks[-k].start(), len(body)


def _content_tokens(text: str) -> set[str]:
    """Lowercased words without possessives, function words and initials."""
    toks = {re.sub(r"['’]s?$", "", w) for w in words(text)}
    return {w for w in toks if len(w) > 1 and w not in FUNCTION_WORDS}


def _is_subject(text: str, subject_tokens: set[str]) -> bool:
    toks = _content_tokens(text)
    return bool(toks) and toks <= subject_tokens


def is_subject(text: str, title: str) -> bool:
    """`text` only names the document's subject (it is in the title, or its words all are): not a fact."""
    return bool(title) and (contains(title, text) or _is_subject(text, _content_tokens(title)))


def analyze(document: Document | str) -> DocFacts:
    """Sentences (pronouns resolved to the title) and fact spans of a document or plain text."""
    title, text = (document.title, document.text) if isinstance(document, Document) else ("", document)
    subject = title_core(title) if title else ""
    person = is_person_text(text)
    sentences = resolve_pronouns(split_sentences(text), subject, person)
    doc_caps = {t.text for s in sentences for t in _tokens(s)[1:] if _is_cap(t)}
    facts = DocFacts(title=title, subject=subject, person=person, sentences=sentences, spans=[])
    spans: list[Span] = []
    for si, s in enumerate(sentences):
        cands = list(_regex_candidates(s))
        cands += [(a, b, k, "") for a, b, k in _name_candidates(s, doc_caps)]
        cands.sort(key=lambda c: (PRIORITY[c[2]], -(c[1] - c[0]), c[0]))
        taken: list[tuple[int, int]] = []
        sent_spans: list[Span] = []
        for a, b, kind, noun in cands:
            if b <= a or any(a < y and x < b for x, y in taken):
                continue
            taken.append((a, b))
            if is_subject(s[a:b], title):
                continue
            sent_spans.append(Span(s[a:b], kind, si, a, b, noun=noun))
        desc = _description(s)
        if desc and not is_subject(s[desc[0]:desc[1]], title):
            a, b, subj, aux = desc
            sent_spans.append(Span(s[a:b], "description", si, a, b, subject=subj, aux=aux))
        if not sent_spans:
            cl = _clause(s)
            if cl and not is_subject(s[cl[0]:cl[1]], title):
                sent_spans.append(Span(s[cl[0]:cl[1]], "clause", si, cl[0], cl[1]))
        spans.extend(sorted(sent_spans, key=lambda sp: (sp.start, sp.end)))
    # a span no question can ask without giving the answer away (e.g. it is also in the title) is no fact
    facts.spans = [sp for sp in spans if normalize(sp.text) and span_questions(facts, sp, 3)]
    return facts


def find_spans(document: Document | str) -> list[Span]:
    """Every fact-bearing span of the document, in reading order."""
    return analyze(document).spans


# ----------------------------------------------------------------------------------------------------------
# Questions
# ----------------------------------------------------------------------------------------------------------

_END_RE = re.compile(r"[\s.!?\"”’')]*$")


def _wh_phrase(span: Span) -> str | None:
    kind = span.kind
    if kind == "person":
        return "who"
    if kind == "place":
        return "which place"
    if kind == "date":
        return "what date" if re.search(r"\d{1,2}\b(?!\d)", re.sub(YEAR, "", span.text)) else "what month"
    if kind in ("year", "decade", "time"):
        return f"what {kind}"
    if kind == "quantity":
        if re.match(r"[$£€¥]", span.text):
            return "how much money"
        if re.search(r"%|per\s?cent", span.text):
            return "what percentage"
        unit = re.search(rf"(?:{UNIT})$", span.text)
        return f"how many {unit.group()}" if unit else "how many"
    if kind in ("count", "number"):
        return "how many" if kind == "count" else "what number"
    if kind == "ordinal":
        return "which"
    if kind in ("colour", "material"):
        return f"what {kind}"
    if kind in ("name", "quoted"):
        return "what"
    return None  # nationality, description, clause: special or none


def with_title(question: str, title: str, subject: str) -> str:
    """Prefix "Regarding <title>, " unless the question already names the document's subject."""
    if not title or contains(question, subject) or contains(question, title):
        return question
    first = question.split(" ", 1)[0]
    acronym = first.isupper() and len(first) > 1
    q = question[0].lower() + question[1:] if first.lower() in FUNCTION_WORDS and not acronym else question
    return CONTEXT_QUESTION.format(title=title, question=q)


def _finish(q: str) -> str:
    q = re.sub(r"\s+", " ", q).strip()
    q = re.sub(r"\s+([?,.])", r"\1", q)
    return upper_first(q.rstrip(" .,;:!")) + ("" if q.endswith("?") else "?")


def _wh_question(facts: DocFacts, span: Span) -> str | None:
    s = facts.sentences[span.sentence]
    if span.kind == "description":
        head = words(span.text)[-1] if words(span.text) else ""
        wh = "Who" if head in OCCUPATIONS else "What"
        return _finish(f"{wh} {span.aux} {lower_first(span.subject)}")
    if span.kind == "nationality":
        m = _DESCRIPTION_RE.match(s)
        if m and m.start("np") <= span.start:
            subj = re.sub(r"\s*\([^)]*\)", "", m.group("subj")).strip()
            return _finish(f"What nationality {m.group('aux')} {lower_first(subj)}")
        return None
    wh = _wh_phrase(span)
    if wh is None:
        return None
    a, b = span.start, span.end
    if span.noun:  # consume the counted noun: "17 episodes" -> "how many episodes"
        m = re.match(rf"\s+{re.escape(span.noun)}\b", s[b:])
        if m:
            b += m.end()
            wh = f"{wh} {span.noun}"
    before, after = s[:a], s[b:]
    if span.kind not in ("quantity", "count"):  # "the what tour" -> "what tour"
        before = re.sub(r"(?:^|(?<=\s))(?:[Tt]he|[Aa]n?)\s+$", "", before)
    if span.kind in TIME_KINDS:  # "X (born August 11, 1947) is ..." -> "When was X born?"
        m = re.search(r"^(?P<subj>[^()]+?)\s*\((?P<verb>born|died)\s+$", before)
        if m:
            return _finish(f"When {'was' if m.group('verb') == 'born' else 'did'} {lower_first(m.group('subj'))} "
                           f"{m.group('verb').replace('died', 'die')}")
    quoted = span.kind == "quoted" and before.endswith(("\"", "“"))
    quoted_before = before[:-1] if quoted else before  # fronting drops the opening quote of a title
    at_end = _END_RE.fullmatch(after) is not None
    if not before.strip():  # the span is the subject: "John Smith designed it" -> "Who designed it?"
        return _finish(f"{wh} {after}")
    m = re.search(rf"\b({_AUX})\b", quoted_before)
    if at_end and m:
        subj, middle = quoted_before[:m.start()].strip(), quoted_before[m.end():].strip()
        simple = not re.search(rf"[,;]|\b(?:and|or|but|{_AUX}|has|had|have)\b|^(?:an?|the|one)\b", middle)
        if subj and "," not in subj and simple and len(subj.split()) <= 10:
            last = middle.rsplit(" ", 1)[-1].lower() if middle else ""
            front = wh
            if span.kind in TIME_KINDS and last in TIME_PREPS:
                middle, front = middle[: len(middle) - len(last)].strip(), "when"
            elif span.kind == "place" and last in {"in", "at", "near"}:
                middle, front = middle[: len(middle) - len(last)].strip(), "where"
            elif span.kind == "place" and last == "from":
                front = "where"
            return _finish(f"{front} {m.group(1)} {lower_first(subj)} {middle}")
    return _finish(f"{before}{wh}{after}")


def _cloze_question(facts: DocFacts, span: Span) -> str | None:
    s = facts.sentences[span.sentence]
    blanked = s[:span.start] + CLOZE_BLANK + s[span.end:]
    if span.kind != "clause":  # blank every mention, so the answer never shows in the question
        blanked = re.sub(rf"(?<!\w){re.escape(span.text)}(?!\w)", CLOZE_BLANK, blanked)
    if blanked.strip() == CLOZE_BLANK:
        return None
    if facts.title:
        return CLOZE_QUESTION.format(title=facts.title, sentence=blanked)
    return CLOZE_QUESTION_NO_TITLE.format(sentence=blanked)


def _complete_question(facts: DocFacts, span: Span) -> str | None:
    prefix = facts.sentences[span.sentence][:span.start].rstrip().rstrip("\"“(").rstrip()
    if len(prefix.split()) < 2:
        return None
    if facts.title:
        return COMPLETE_QUESTION.format(title=facts.title, prefix=prefix)
    return COMPLETE_QUESTION_NO_TITLE.format(prefix=prefix)


def span_questions(facts: DocFacts, span: Span, max_forms: int = 3) -> list[QAPair]:
    """Up to `max_forms` questions whose answer is `span`: wh-question, cloze, complete-the-fact."""
    out: list[QAPair] = []
    sentence = facts.sentences[span.sentence]
    wh = _wh_question(facts, span)
    candidates = [with_title(wh, facts.title, facts.subject) if wh else None,
                  _cloze_question(facts, span), _complete_question(facts, span)]
    for q in candidates:
        if len(out) >= max_forms:
            break
        if q and not contains(q, span.text):
            out.append(QAPair(question=q, answer=span.text, full_answer=sentence, source="rules"))
    return out


def rule_qa_rounds(facts: DocFacts, max_per_span: int = 3) -> list[list[QAPair]]:
    """Rule QA in rounds: round k holds the k-th question form of every span (reading order)."""
    if max_per_span < 1:
        raise ValueError(f"max_per_span must be >= 1, got {max_per_span}")
    seen: set[str] = set()
    rounds: list[list[QAPair]] = [[] for _ in range(max_per_span)]
    for span in facts.spans:
        for k, qa in enumerate(span_questions(facts, span, max_per_span)):
            key = normalize(qa.question)
            if key not in seen:
                seen.add(key)
                rounds[k].append(qa)
    return [r for r in rounds if r]


def rule_qa(document: Document | str, max_per_span: int = 3, facts: DocFacts | None = None) -> list[QAPair]:
    """Fact-covering QA pairs: every span of the document is the answer of up to `max_per_span` questions.

    Ordered by round (one question per span first, then the second form of each, ...), so that any prefix
    a consumer keeps (e.g. the teacher's max_qa) covers as many facts as it can.
    """
    facts = facts if facts is not None else analyze(document)
    return [qa for r in rule_qa_rounds(facts, max_per_span) for qa in r]


# ----------------------------------------------------------------------------------------------------------
# Coverage
# ----------------------------------------------------------------------------------------------------------

def covers(answer: str, span_text: str) -> bool:
    """An answer covers a span if it contains it, or is a large part of it (normalized, whole words)."""
    na, ns = normalize(answer), normalize(span_text)
    if not na or not ns:
        return False
    return f" {ns} " in f" {na} " or (f" {na} " in f" {ns} " and len(na) >= 0.5 * len(ns))


def coverage(spans: list[Span], qa: list[QAPair]) -> dict:
    """Which spans some QA pair answers, and from which source: {"spans", "covered", "coverage", ...}."""
    items, by_source = [], dict.fromkeys(AUGMENT_SOURCES, 0)
    for sp in spans:
        sources = sorted({q.source for q in qa if covers(q.answer, sp.text)})
        for src in sources:
            by_source[src] += 1
        items.append({**sp.to_dict(), "sources": sources})
    covered = sum(1 for it in items if it["sources"])
    return {"spans": len(spans), "covered": covered, "coverage": covered / len(spans) if spans else 1.0,
            "by_source": by_source, "items": items}
