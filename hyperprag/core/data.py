"""Question and corpus records: the project's one JSONL schema (see README, "Data schema"), its validating
loaders, and readers of the datasets' official raw formats."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from hyperprag.core.errors import InputError
from hyperprag.core.io import atomic_write_text


class DataError(InputError, ValueError):
    """A bad input record; the message names the file, the line and the field."""

    def __init__(self, path: str, line: int | None, field_name: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field_name, problem
        where = self.path + (f", line {line}" if line is not None else "")
        what = f"field {field_name!r}: " if field_name else ""
        super().__init__(f"{where}: {what}{problem}")


def content_hash(title: str, text: str) -> str:
    """Stable key of a passage's or document's content (title + text): caches augmentations and adapters."""
    return hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Passage:
    title: str
    text: str
    supporting: bool = False

    @property
    def content_hash(self) -> str:
        """Equal to the hash of a Document with the same title and text."""
        return content_hash(self.title, self.text)


@dataclass(frozen=True)
class Document:
    """One corpus entry: what gets retrieved and what gets its own adapter."""

    id: str
    title: str
    text: str

    @property
    def content_hash(self) -> str:
        """Stable key of the content (title + text), used to cache augmentations and adapters."""
        return content_hash(self.title, self.text)

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


# ----------------------------------------------------------------------------------------------------------
# Loading and validating the JSONL schema
# ----------------------------------------------------------------------------------------------------------

logger = logging.getLogger(__name__)
T = TypeVar("T")
ON_ERROR = ("fail", "skip")
LONG_DOCS = ("fail", "chunk")


class Loaded(list, Generic[T]):
    """The good records of a file, plus what was skipped (`on_error="skip"`) or split (`long_docs="chunk"`)."""

    def __init__(self, items: Iterable[T] = (), skipped: list[DataError] | None = None,
                 chunked: list[DataError] | None = None):
        super().__init__(items)
        self.skipped: list[DataError] = skipped if skipped is not None else []
        self.chunked: list[DataError] = chunked if chunked is not None else []  # notes, one per split doc


class _Bad(Exception):
    """A field-level problem found while parsing one record; the loader adds file and line."""

    def __init__(self, field_name: str | None, problem: str):
        super().__init__(problem)
        self.field, self.problem = field_name, problem


def _typename(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _req(rec: dict, key: str, name: str | None = None) -> Any:
    """rec[key], or a "missing" error for the field `name` (default: key)."""
    if key not in rec:
        raise _Bad(name or key, "missing")
    return rec[key]


def _str(v: Any, name: str, *, nonblank: bool = True) -> str:
    if not isinstance(v, str):
        raise _Bad(name, f"expected a string, got {_typename(v)}")
    if nonblank and not v.strip():
        raise _Bad(name, "empty or whitespace-only")
    return v


def _nonblank(v: Any) -> bool:
    return type(v) is str and bool(v) and not v.isspace()


def _passage(v: Any, i: int) -> Passage:
    if type(v) is dict:  # fast path for the common, valid record
        title, text, sup = v.get("title", ""), v.get("text"), v.get("supporting", False)
        if type(title) is str and _nonblank(text) and type(sup) is bool:
            return Passage(title, text, sup)
    name = f"passages[{i}]"
    if not isinstance(v, dict):
        raise _Bad(name, f"expected an object, got {_typename(v)}")
    _str(v.get("title", ""), f"{name}.title", nonblank=False)
    _str(_req(v, "text", f"{name}.text"), f"{name}.text")
    raise _Bad(f"{name}.supporting", f"expected true/false, got {_typename(v.get('supporting'))}")


def _parse_question(rec: Any) -> Question:
    """One question record (a decoded JSON object) -> Question; raises _Bad naming the field."""
    if not isinstance(rec, dict):
        raise _Bad(None, f"expected a JSON object, got {_typename(rec)}")
    qid = _str(_req(rec, "id"), "id")
    question = _str(_req(rec, "question"), "question")
    answers = _req(rec, "answers")
    if not isinstance(answers, list) or not answers:
        raise _Bad("answers", f"expected a non-empty list of strings, got {_typename(answers)}"
                   + (" (empty)" if isinstance(answers, list) else ""))
    if not all(_nonblank(a) for a in answers):
        for i, a in enumerate(answers):
            _str(a, f"answers[{i}]")
    dataset = _str(rec.get("dataset") or "", "dataset", nonblank=False)
    qtype = rec.get("type")
    if qtype is not None and not isinstance(qtype, str):
        raise _Bad("type", f"expected a string or null, got {_typename(qtype)}")
    raw_passages = rec.get("passages", [])
    if raw_passages is None:
        raw_passages = []
    if not isinstance(raw_passages, list):
        raise _Bad("passages", f"expected a list, got {_typename(raw_passages)}")
    passages = [_passage(p, i) for i, p in enumerate(raw_passages)]
    options = rec.get("options")
    if options is not None:
        if not isinstance(options, dict) or not options:
            raise _Bad("options", f"expected a non-empty object letter -> text, got {_typename(options)}")
        for k, v in options.items():
            _str(v, f"options.{k}")
        if answers[0] not in options:
            raise _Bad("answers[0]", f"gold letter {answers[0]!r} is not one of the options {sorted(options)}")
    return Question(id=qid, question=question, answers=list(answers), dataset=dataset, type=qtype,
                    passages=passages, options=dict(options) if options is not None else None)


def _parse_document(rec: Any) -> Document:
    """One corpus record -> Document; raises _Bad naming the field."""
    if not isinstance(rec, dict):
        raise _Bad(None, f"expected a JSON object, got {_typename(rec)}")
    return Document(id=_str(_req(rec, "id"), "id"),
                    title=_str(rec.get("title", ""), "title", nonblank=False),
                    text=_str(_req(rec, "text"), "text"))


_SENT_END = re.compile(r"(?<=[.!?])\s+")


def split_long_text(text: str, max_chars: int) -> list[str]:
    """Split at sentence ends (then spaces, then anywhere) into pieces of <= max_chars; drops no characters
    other than the whitespace at the cuts."""
    pieces: list[str] = []
    pos = 0
    for m in _SENT_END.finditer(text):  # sentences keep their trailing whitespace: "".join(pieces) == text
        pieces.append(text[pos:m.end()])
        pos = m.end()
    pieces.append(text[pos:])
    fine: list[str] = []
    for p in pieces:
        if len(p.strip()) <= max_chars:
            fine.append(p)
            continue
        for w in re.findall(r"\S+\s*", p):  # an overlong sentence: fall back to words
            fine.extend(w[i:i + max_chars] for i in range(0, len(w), max_chars))
    chunks, cur = [], ""
    for p in fine:
        if cur and len((cur + p).strip()) > max_chars:
            chunks.append(cur.strip())
            cur = ""
        cur += p
    if cur.strip():
        chunks.append(cur.strip())
    return chunks


def _iter_lines(path: Path) -> Iterable[tuple[int, bytes]]:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark some editors write
        data = data[3:]
    for i, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            yield i, line


def _load_jsonl(path: str | Path, parse: Callable[[Any], T], on_error: str,
                expand: Callable[[T, int], list[T]] | None = None) -> Loaded[T]:
    """Shared loop: decode, parse, check duplicate ids; fail at the first error or collect them."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "no such file" if not path.exists() else "not a file")
    out: Loaded[T] = Loaded()
    first_line: dict[str, int] = {}
    n_lines = 0

    def bad(lineno: int, field_name: str | None, problem: str) -> None:
        err = DataError(str(path), lineno, field_name, problem)
        if on_error == "fail":
            raise err
        out.skipped.append(err)

    for lineno, raw in _iter_lines(path):
        n_lines += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad(lineno, None, f"not valid UTF-8 (byte {e.start} of the line: {raw[e.start:e.start + 4]!r})")
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            bad(lineno, None, f"invalid JSON: {e.msg} at column {e.colno}")
            continue
        try:
            item = parse(rec)
            items = expand(item, lineno) if expand is not None else [item]
        except _Bad as e:
            rid = rec.get("id") if isinstance(rec, dict) and isinstance(rec.get("id"), str) else None
            bad(lineno, e.field, e.problem + (f" (record id {rid!r})" if rid and e.field != "id" else ""))
            continue
        dup = next((it.id for it in items if it.id in first_line), None)  # type: ignore[attr-defined]
        if dup is not None:
            bad(lineno, "id", f"duplicate id {dup!r} (first on line {first_line[dup]})")
            continue
        for it in items:
            first_line[it.id] = lineno  # type: ignore[attr-defined]
        out.extend(items)
    if n_lines == 0:
        raise DataError(str(path), None, None, "file is empty (no records)")
    if out.skipped:
        logger.warning("%s: skipped %d of %d records; first: %s", path, len(out.skipped), n_lines, out.skipped[0])
        if not out:
            raise DataError(str(path), None, None,
                            f"no valid records: all {n_lines} were bad; first: {out.skipped[0]}")
    return out


def load_questions(path: str | Path, on_error: str = "fail", max_chars: int | None = None) -> Loaded[Question]:
    """Read and validate a question JSONL; "fail" raises DataError at the first bad line, "skip" collects.
    A passage text over `max_chars` (None: no limit) makes its record bad, as an overlong corpus text does."""
    if max_chars is None:
        return _load_jsonl(path, _parse_question, on_error)

    def parse(rec: Any) -> Question:
        q = _parse_question(rec)
        for i, p in enumerate(q.passages):
            if len(p.text) > max_chars:
                raise _Bad(f"passages[{i}].text", f"passage is {len(p.text)} characters, over max_chars={max_chars}")
        return q

    return _load_jsonl(path, parse, on_error)


def load_corpus(path: str | Path, on_error: str = "fail", max_chars: int = 20000,
                long_docs: str = "fail") -> Loaded[Document]:
    """Read and validate a corpus JSONL; a text over max_chars is an error ("fail") or is split ("chunk")
    into documents "{id}#{k}" of <= max_chars at sentence ends, each noted in `.chunked` (never cut)."""
    if long_docs not in LONG_DOCS:
        raise ValueError(f"long_docs must be one of {LONG_DOCS}, got {long_docs!r}")
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    notes: list[DataError] = []

    def expand(doc: Document, lineno: int) -> list[Document]:
        if len(doc.text) <= max_chars:
            return [doc]
        if long_docs == "fail":
            raise _Bad("text", f"document {doc.id!r} is {len(doc.text)} characters, over max_chars={max_chars} "
                               "(use long_docs='chunk' to split it, or raise max_chars)")
        parts = split_long_text(doc.text, max_chars)
        notes.append(DataError(str(path), lineno, "text", f"document {doc.id!r} of {len(doc.text)} characters "
                                                          f"split into {len(parts)} chunks of <= {max_chars}"))
        return [Document(id=f"{doc.id}#{k}", title=doc.title, text=t) for k, t in enumerate(parts)]

    out = _load_jsonl(path, _parse_document, on_error, expand)
    out.chunked = notes
    if notes:
        logger.info("%s: split %d long documents into chunks", path, len(notes))
    return out


# ----------------------------------------------------------------------------------------------------------
# Views, pooling, writing
# ----------------------------------------------------------------------------------------------------------

def record_to_dict(record: Question | Document | Passage | dict, drop_none_options: bool = True) -> dict:
    """Our JSONL form of a record: dataclass fields, with a question's absent `options` left out."""
    if isinstance(record, dict):
        return record
    if not is_dataclass(record):
        raise TypeError(f"expected a Question, Document, Passage or dict, got {type(record).__name__}")
    d = asdict(record)
    if drop_none_options and isinstance(record, Question) and record.options is None:
        d.pop("options")
    return d


def to_dataset(records: Sequence[Question | Document | dict]):
    """The records as a Hugging Face `datasets.Dataset` (one row per record)."""
    import datasets  # heavy import, only when asked for

    return datasets.Dataset.from_list([record_to_dict(r, drop_none_options=False) for r in records])


def write_jsonl(path: str | Path, records: Iterable[Question | Document | dict]) -> int:
    """Write records as JSONL atomically (the old file or the complete new one); returns the count."""
    lines = [json.dumps(record_to_dict(r), ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def pool_corpus(questions: Iterable[Question]) -> list[Document]:
    """All passages of the questions as one corpus, deduplicated by (title, text), ids "p0", "p1", ... in
    first-seen order (stable for the same questions in the same order)."""
    seen: dict[tuple[str, str], str] = {}
    docs: list[Document] = []
    for q in questions:
        for p in q.passages:
            key = (p.title, p.text)
            if key not in seen:
                seen[key] = f"p{len(docs)}"
                docs.append(Document(id=seen[key], title=p.title, text=p.text))
    return docs


GOLD = ("supporting", "all")


def gold_passages(q: Question, gold: str = "supporting") -> list[Passage]:
    """The question's gold passages: its supporting ones (all if none is marked), or all with gold="all"."""
    if gold not in GOLD:
        raise ValueError(f"gold must be one of {GOLD}, got {gold!r}")
    if gold == "supporting":
        return [p for p in q.passages if p.supporting] or list(q.passages)
    return list(q.passages)


def unique_by_content(docs: Iterable[Document], limit: int | None = None,
                      exclude: Collection[str] = ()) -> list[Document]:
    """Documents re-identified by their content hash, the first copy of repeated content kept, in order.

    `exclude` holds content hashes to leave out; `limit` stops after that many documents (reading no
    further into `docs`).
    """
    out: dict[str, Document] = {}
    for d in docs:
        h = d.content_hash
        if h in exclude or h in out:
            continue
        out[h] = Document(h, d.title, d.text)
        if limit is not None and len(out) >= limit:
            break
    return list(out.values())


def passage_documents(questions: Iterable[Question], gold: str = "supporting", limit: int | None = None,
                      exclude: Collection[str] = ()) -> list[Document]:
    """The questions' gold passages as documents, in question order, deduplicated by content.

    Ids are content hashes (`Document.content_hash`), so a passage gets the same id (and one adapter) in
    every file it appears in. `exclude` holds content hashes to leave out (e.g. every passage of the
    evaluated questions); `limit` stops after that many documents.
    """
    docs = (Document("", p.title, p.text) for q in questions for p in gold_passages(q, gold))
    return unique_by_content(docs, limit, exclude)


def parse_slice(spec: str) -> tuple[str, slice]:
    """``path@START:END`` -> (path, slice(START, END)); a plain path -> (path, slice(None)). Either bound may
    be empty (``q.jsonl@400:`` is from question 400 on)."""
    path, sep, rng = spec.rpartition("@")
    if not sep or ":" not in rng:
        return spec, slice(None)
    start, _, end = rng.partition(":")
    try:
        return path, slice(int(start) if start else None, int(end) if end else None)
    except ValueError:
        raise ValueError(f"{spec!r}: expected PATH@START:END with integer bounds") from None


def corpus_index(docs: Iterable[Document]) -> dict[tuple[str, str], str]:
    """(title, text) -> doc id, to find a question's passages in a corpus (first id wins on repeats)."""
    index: dict[tuple[str, str], str] = {}
    for d in docs:
        index.setdefault((d.title, d.text), d.id)
    return index


def supporting_ids(question: Question, corpus_index: dict[tuple[str, str], str], strict: bool = True
                   ) -> list[str]:
    """Corpus ids of the question's supporting passages (the gold set for recall@k); strict raises KeyError
    when one is not in the corpus, else it is left out."""
    out: list[str] = []
    for p in question.passages:
        if not p.supporting:
            continue
        did = corpus_index.get((p.title, p.text))
        if did is None:
            if strict:
                raise KeyError(f"question {question.id!r}: supporting passage {p.title!r} is not in the corpus")
            continue
        if did not in out:
            out.append(did)
    return out


# ----------------------------------------------------------------------------------------------------------
# Readers of the official raw formats
# ----------------------------------------------------------------------------------------------------------

def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "no such file")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(str(path), None, None, f"not valid UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise DataError(str(path), e.lineno, None, f"invalid JSON: {e.msg} at column {e.colno}") from None


def _json_list(path: str | Path) -> list:
    data = _read_json(path)
    if isinstance(data, dict) and isinstance(data.get("data"), list):  # some mirrors wrap the list
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(str(path), None, None, f"expected a JSON list of records, got {_typename(data)}")
    if not data:
        raise DataError(str(path), None, None, "file is empty (no records)")
    return data


def _dedupe(xs: Iterable[str]) -> list[str]:
    out: list[str] = []
    for x in xs:
        if isinstance(x, str) and x.strip() and x not in out:
            out.append(x)
    return out


def _context_passages(ctx: Any, supporting_titles: set[str]) -> list[dict]:
    if not isinstance(ctx, list):
        raise _Bad("context", f"expected a list of [title, sentences], got {_typename(ctx)}")
    out = []
    for i, item in enumerate(ctx):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], list) and all(isinstance(s, str) for s in item[1])):
            raise _Bad(f"context[{i}]", "expected [title, [sentence, ...]]")
        out.append({"title": item[0], "text": " ".join(s.strip() for s in item[1] if s.strip()),
                    "supporting": item[0] in supporting_titles})
    return out


def _supporting_titles(rec: dict) -> set[str]:
    sf = rec.get("supporting_facts", [])
    if not isinstance(sf, list) or not all(isinstance(x, list) and x and isinstance(x[0], str) for x in sf):
        raise _Bad("supporting_facts", "expected a list of [title, sentence_id]")
    return {x[0] for x in sf}


def _collect(path: str | Path, records: Iterable[tuple[int | None, str, Any]], on_error: str) -> Loaded[Question]:
    """Validate converted records (line or None, field prefix, dict) into Questions with the loader rules."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    out: Loaded[Question] = Loaded()
    seen: set[str] = set()
    for line, prefix, make in records:
        try:
            q = _parse_question(make())
            if q.id in seen:
                raise _Bad("id", f"duplicate id {q.id!r}")
        except _Bad as e:
            name = f"{prefix}.{e.field}" if prefix and e.field else (e.field or prefix or None)
            err = DataError(str(path), line, name, e.problem)
            if on_error == "fail":
                raise err from None
            out.skipped.append(err)
            continue
        seen.add(q.id)
        out.append(q)
    if out.skipped:
        logger.warning("%s: skipped %d bad records; first: %s", path, len(out.skipped), out.skipped[0])
    if not out:
        raise DataError(str(path), None, None, "no valid records")
    return out


def read_hotpotqa_raw(path: str | Path, on_error: str = "fail") -> Loaded[Question]:
    """HotpotQA's official dev json (list of {_id, question, answer, type, level, supporting_facts,
    context}); all context paragraphs become passages, those named in supporting_facts supporting."""
    data = _json_list(path)

    def make(rec: Any) -> dict:
        if not isinstance(rec, dict):
            raise _Bad(None, f"expected an object, got {_typename(rec)}")
        return {"id": _req(rec, "_id"), "dataset": "hotpotqa", "type": rec.get("type"),
                "question": _req(rec, "question"), "answers": [_req(rec, "answer")],
                "passages": _context_passages(_req(rec, "context"), _supporting_titles(rec))}

    return _collect(path, ((None, f"[{i}]", lambda r=r: make(r)) for i, r in enumerate(data)), on_error)


class _AliasRow:
    """One id_aliases.json line, with an `.id` so the loader's duplicate check applies to Q ids."""

    def __init__(self, rec: Any):
        if not isinstance(rec, dict):
            raise _Bad(None, f"expected a JSON object, got {_typename(rec)}")
        self.id = _str(_req(rec, "Q_id"), "Q_id")
        names = list(rec.get("aliases") or []) + list(rec.get("demonyms") or [])
        self.names = _dedupe(names)


def _read_2wiki_aliases(path: str | Path) -> dict[str, list[str]]:
    """2WikiMultihopQA's id_aliases.json: JSON lines {"Q_id", "aliases", "demonyms"} (the official eval
    counts both)."""
    return {row.id: row.names for row in _load_jsonl(path, _AliasRow, "fail")}


def read_2wiki_raw(path: str | Path, aliases_path: str | Path | None = None, on_error: str = "fail"
                   ) -> Loaded[Question]:
    """2WikiMultihopQA's official dev json (list of {_id, type, question, answer, supporting_facts, context,
    evidences}); answer aliases come from id_aliases.json by the record's `answer_id` when given."""
    data = _json_list(path)
    aliases = _read_2wiki_aliases(aliases_path) if aliases_path is not None else {}

    def make(rec: Any) -> dict:
        if not isinstance(rec, dict):
            raise _Bad(None, f"expected an object, got {_typename(rec)}")
        answer = _req(rec, "answer")
        extra = aliases.get(rec.get("answer_id") or "", [])
        return {"id": _req(rec, "_id"), "dataset": "2wikimultihopqa", "type": rec.get("type"),
                "question": _req(rec, "question"),
                "answers": [answer] + [a for a in _dedupe(extra) if a != answer],
                "passages": _context_passages(_req(rec, "context"), _supporting_titles(rec))}

    return _collect(path, ((None, f"[{i}]", lambda r=r: make(r)) for i, r in enumerate(data)), on_error)


POPQA_COLUMNS = ("id", "subj", "prop", "obj", "subj_id", "prop_id", "obj_id", "s_aliases", "o_aliases", "s_uri",
                 "o_uri", "s_wiki_title", "o_wiki_title", "s_pop", "o_pop", "question", "possible_answers")


def _list_field(text: str, name: str) -> list[str]:
    """A list column of PopQA: JSON, or the Python repr some copies carry ("['a', 'b']")."""
    import ast

    text = text.strip()
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise _Bad(name, f"expected a JSON list, got {text[:60]!r}") from None
    if not isinstance(value, list):
        raise _Bad(name, f"expected a list, got {_typename(value)}")
    return [v for v in value if isinstance(v, str)]


def read_popqa_tsv(path: str | Path, on_error: str = "fail") -> Loaded[Question]:
    """PopQA's tsv (header row, columns POPQA_COLUMNS, quoted as pandas writes it); answers = obj, then
    possible_answers and o_aliases; no passages."""
    import csv
    import io

    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "no such file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(str(path), None, None, f"not valid UTF-8 at byte {e.start}") from None
    if not text.strip():
        raise DataError(str(path), None, None, "file is empty (no records)")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    header = next(reader)
    missing = [c for c in ("id", "prop", "obj", "question", "possible_answers") if c not in header]
    if missing:
        raise DataError(str(path), 1, missing[0], f"missing column (header has {header})")

    def make(row: list[str]) -> dict:
        if len(row) != len(header):
            raise _Bad(None, f"expected {len(header)} tab-separated columns, got {len(row)}")
        r = dict(zip(header, row, strict=True))
        if not r["id"].strip():
            raise _Bad("id", "empty")
        obj = r["obj"].strip()
        names = [obj, *_list_field(r["possible_answers"], "possible_answers"),
                 *_list_field(r.get("o_aliases", ""), "o_aliases")]
        return {"id": f"popqa-{r['id'].strip()}", "dataset": "popqa", "type": r["prop"] or None,
                "question": r["question"], "answers": _dedupe(names) or [obj]}

    def rows():
        for row in reader:
            if row:
                yield reader.line_num, "", (lambda row=row: make(row))

    return _collect(path, rows(), on_error)


def read_cwq_raw(path: str | Path, on_error: str = "fail") -> Loaded[Question]:
    """ComplexWebQuestions json (list of {ID, question, answers: [{answer, aliases, answer_id}],
    compositionality_type, ...}); every answer and alias counts, the first answer is the gold."""
    data = _json_list(path)

    def make(rec: Any) -> dict:
        if not isinstance(rec, dict):
            raise _Bad(None, f"expected an object, got {_typename(rec)}")
        raw = _req(rec, "answers")
        if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
            raise _Bad("answers", "expected a list of {answer, aliases, answer_id}")
        names: list[str] = []
        for a in raw:
            names += [a.get("answer")] + list(a.get("aliases") or [])
        return {"id": _req(rec, "ID"), "dataset": "cwq", "type": rec.get("compositionality_type"),
                "question": _req(rec, "question"), "answers": _dedupe(names)}

    return _collect(path, ((None, f"[{i}]", lambda r=r: make(r)) for i, r in enumerate(data)), on_error)


RAW_READERS: dict[str, Callable[..., Loaded[Question]]] = {
    "hotpotqa": read_hotpotqa_raw, "2wiki": read_2wiki_raw, "popqa": read_popqa_tsv, "cwq": read_cwq_raw}


def convert_raw(kind: str, path: str | Path, out: str | Path, aliases_path: str | Path | None = None,
                on_error: str = "fail") -> int:
    """Convert an official raw file (kind: hotpotqa | 2wiki | popqa | cwq) to our question JSONL; returns
    the number written."""
    if kind not in RAW_READERS:
        raise ValueError(f"unknown raw format {kind!r}; choose one of {sorted(RAW_READERS)}")
    if aliases_path is not None and kind != "2wiki":
        raise ValueError("aliases_path applies to kind='2wiki' only")
    kw = {"aliases_path": aliases_path} if aliases_path is not None else {}
    return write_jsonl(out, RAW_READERS[kind](path, on_error=on_error, **kw))
