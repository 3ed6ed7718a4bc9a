"""Loaders reject every kind of bad record with file, line and field; raw readers; pooling; writing."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from hyperprag.core.data import (
    DataError,
    Document,
    Loaded,
    Passage,
    Question,
    convert_raw,
    corpus_index,
    load_corpus,
    load_questions,
    parse_slice,
    passage_documents,
    pool_corpus,
    read_2wiki_raw,
    read_cwq_raw,
    read_hotpotqa_raw,
    read_popqa_tsv,
    split_long_text,
    supporting_ids,
    to_dataset,
    unique_by_content,
    write_jsonl,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
RAW = FIXTURES / "raw"


def shared_data() -> Path | None:
    """../shared/data beside the checkout (CI and dev machines), or $HYPERPRAG_SHARED_DATA."""
    env = os.environ.get("HYPERPRAG_SHARED_DATA")
    path = Path(env) if env else Path(__file__).parents[2] / "../shared/data"
    return path.resolve() if path.is_dir() else None


GOOD_Q = {"id": "g1", "dataset": "toy", "type": None, "question": "Who?", "answers": ["Ann", "Anne"],
          "passages": [{"title": "T", "text": "Ann did it.", "supporting": True}]}
GOOD_Q2 = {**GOOD_Q, "id": "g2"}


def q_with(**changes) -> str:
    rec = {**GOOD_Q, "id": "bad", **changes}
    return json.dumps({k: v for k, v in rec.items() if v is not _DROP})


_DROP = object()

# (case name, bad line as str or bytes, expected field, expected words in the problem)
QUESTION_CASES = [
    ("invalid json", '{"id": "bad", "question": ', None, "invalid JSON"),
    ("not an object", '["a", "b"]', None, "expected a JSON object"),
    ("non-utf8", b'{"id": "bad", "question": "caf\xe9?", "answers": ["x"]}', None, "UTF-8"),
    ("missing id", q_with(id=_DROP), "id", "missing"),
    ("missing question", q_with(question=_DROP), "question", "missing"),
    ("missing answers", q_with(answers=_DROP), "answers", "missing"),
    ("id not str", q_with(id=17), "id", "expected a string, got int"),
    ("answers a string", q_with(answers="Ann"), "answers", "non-empty list"),
    ("answers empty", q_with(answers=[]), "answers", "empty"),
    ("answers hold a number", q_with(answers=["Ann", 3]), "answers[1]", "got int"),
    ("answer blank", q_with(answers=["  "]), "answers[0]", "whitespace"),
    ("empty question", q_with(question=""), "question", "empty"),
    ("whitespace question", q_with(question=" \t "), "question", "whitespace"),
    ("type a number", q_with(type=3), "type", "string or null"),
    ("passages not a list", q_with(passages={"title": "T"}), "passages", "expected a list"),
    ("passage text empty", q_with(passages=[{"title": "T", "text": " ", "supporting": False}]),
     "passages[0].text", "empty"),
    ("passage text missing", q_with(passages=[{"title": "T"}]), "passages[0].text", "missing"),
    ("passage supporting not bool", q_with(passages=[{"title": "T", "text": "x", "supporting": "yes"}]),
     "passages[0].supporting", "true/false"),
    ("options not an object", q_with(options=["a", "b"]), "options", "letter -> text"),
    ("option text not str", q_with(options={"A": 1, "B": "b"}, answers=["A"]), "options.A", "got int"),
    ("gold letter not an option", q_with(options={"A": "a", "B": "b"}, answers=["C"]), "answers[0]",
     "not one of the options"),
    ("duplicate id", json.dumps(GOOD_Q), "id", "duplicate id 'g1' (first on line 1)"),
]


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


@pytest.mark.parametrize("name,bad,field,words", QUESTION_CASES, ids=[c[0] for c in QUESTION_CASES])
def test_load_questions_bad_record_names_file_line_field(tmp_path, name, bad, field, words):
    path = write_lines(tmp_path / "q.jsonl", [json.dumps(GOOD_Q), bad, json.dumps(GOOD_Q2)])
    with pytest.raises(DataError) as info:
        load_questions(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 2, field)
    assert words in err.problem
    msg = str(err)
    assert str(path) in msg and "line 2" in msg and (field is None or repr(field) in msg)
    # skip mode keeps the good lines and reports the bad one
    loaded = load_questions(path, on_error="skip")
    assert [q.id for q in loaded] == ["g1", "g2"]
    assert [(e.line, e.field) for e in loaded.skipped] == [(2, field)]


CORPUS_GOOD = {"id": "d1", "title": "T", "text": "Some text."}
CORPUS_CASES = [
    ("invalid json", '{"id": "x", "text": "a"', None, "invalid JSON"),
    ("non-utf8", b'{"id": "x", "title": "\xff", "text": "a"}', None, "UTF-8"),
    ("missing text", json.dumps({"id": "x", "title": "T"}), "text", "missing"),
    ("missing id", json.dumps({"title": "T", "text": "a"}), "id", "missing"),
    ("empty text", json.dumps({"id": "x", "title": "T", "text": ""}), "text", "empty"),
    ("whitespace text", json.dumps({"id": "x", "title": "T", "text": "\n  "}), "text", "whitespace"),
    ("title a number", json.dumps({"id": "x", "title": 5, "text": "a"}), "title", "got int"),
    ("id a number", json.dumps({"id": 5, "title": "T", "text": "a"}), "id", "got int"),
    ("too long", json.dumps({"id": "x", "title": "T", "text": "word " * 30}), "text",
     "150 characters, over max_chars=100"),
    ("duplicate id", json.dumps(CORPUS_GOOD), "id", "duplicate id 'd1'"),
]


@pytest.mark.parametrize("name,bad,field,words", CORPUS_CASES, ids=[c[0] for c in CORPUS_CASES])
def test_load_corpus_bad_record_names_file_line_field(tmp_path, name, bad, field, words):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(CORPUS_GOOD), bad])
    with pytest.raises(DataError) as info:
        load_corpus(path, max_chars=100)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 2, field)
    assert words in err.problem
    assert str(path) in str(err) and "line 2" in str(err)


def test_skip_mode_collects_every_error_and_logs_one_line(tmp_path, caplog):
    lines = [json.dumps(GOOD_Q), "not json", q_with(id=1), json.dumps(GOOD_Q2), q_with(question=" "),
             json.dumps(GOOD_Q)]
    path = write_lines(tmp_path / "q.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="hyperprag.core.data"):
        loaded = load_questions(path, on_error="skip")
    assert isinstance(loaded, Loaded) and isinstance(loaded, list)
    assert [q.id for q in loaded] == ["g1", "g2"]
    assert [(e.line, e.field) for e in loaded.skipped] == [(2, None), (3, "id"), (5, "question"), (6, "id")]
    summaries = [r for r in caplog.records if "skipped 4 of 6" in r.getMessage()]
    assert len(summaries) == 1 and "\n" not in summaries[0].getMessage()


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"], ids=["empty", "blank lines"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "e.jsonl"
    path.write_bytes(content)
    for loader in (load_questions, load_corpus):
        for mode in ("fail", "skip"):
            with pytest.raises(DataError, match="empty"):
                loader(path, on_error=mode)


def test_missing_file_all_bad_and_bad_options(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_questions(tmp_path / "nope.jsonl")
    path = write_lines(tmp_path / "bad.jsonl", ["x", "y"])
    with pytest.raises(DataError, match="no valid records"):
        load_questions(path, on_error="skip")
    with pytest.raises(ValueError, match="on_error"):
        load_questions(path, on_error="ignore")
    with pytest.raises(ValueError, match="long_docs"):
        load_corpus(path, long_docs="truncate")


def test_blank_lines_bom_and_line_numbers(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_Q).encode() + b"\n\n" + b"oops\n")
    with pytest.raises(DataError) as info:
        load_questions(path)
    assert info.value.line == 3


def test_good_questions_parse_into_dataclasses():
    qs = load_questions(FIXTURES / "questions.jsonl")
    assert [q.id for q in qs] == ["q1", "q2", "q3"] and qs.skipped == []
    q1, _, q3 = qs
    assert q1.answers == ["Ollam", "Ollam village"] and q1.type == "bridge" and q1.options is None
    assert q1.passages[0] == Passage("Mount Fennick", q1.passages[0].text, True)
    assert q3.options == {"A": "cow", "B": "sheep", "C": "goat"} and q3.type is None and q3.passages == []


def test_chunk_long_docs_keeps_every_word(tmp_path):
    sentences = [f"Sentence number {i} says something about topic {i % 7}." for i in range(40)]
    long_text = " ".join(sentences)
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(CORPUS_GOOD),
                                              json.dumps({"id": "big", "title": "Big", "text": long_text})])
    docs = load_corpus(path, max_chars=200, long_docs="chunk")
    chunks = [d for d in docs if d.id.startswith("big#")]
    assert [d.id for d in chunks] == [f"big#{k}" for k in range(len(chunks))] and len(chunks) > 5
    assert all(len(d.text) <= 200 and d.title == "Big" for d in chunks)
    assert all(d.text.endswith(".") for d in chunks)  # cut at sentence ends
    assert " ".join(d.text for d in chunks) == long_text  # nothing dropped
    assert len(docs.chunked) == 1 and docs.chunked[0].line == 2 and f"{len(chunks)} chunks" in str(docs.chunked[0])


def test_split_long_text_without_sentence_ends():
    text = "x" * 25 + " " + "word " * 10
    parts = split_long_text(text, 10)
    assert all(len(p) <= 10 for p in parts)
    assert "".join(p.replace(" ", "") for p in parts) == text.replace(" ", "")


def test_chunk_id_colliding_with_a_real_id_is_a_duplicate(tmp_path):
    lines = [json.dumps({"id": "big#0", "title": "", "text": "short"}),
             json.dumps({"id": "big", "title": "", "text": "A sentence here. " * 20})]
    with pytest.raises(DataError, match="duplicate id 'big#0'"):
        load_corpus(write_lines(tmp_path / "c.jsonl", lines), max_chars=50, long_docs="chunk")


def test_6000_lines_load(tmp_path):
    # about the shape of the shared files: a few passages of a few hundred characters per question
    q = {**GOOD_Q, "passages": [{"title": f"T{i}", "text": "Some words here. " * 20, "supporting": i < 2}
                                for i in range(4)]}
    path = write_lines(tmp_path / "q.jsonl", [json.dumps({**q, "id": f"q{i}"}) for i in range(6000)])
    assert len(load_questions(path)) == 6000
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"id": f"d{i}", "title": f"T{i}", "text": "Words. " * 60})
                                              for i in range(6000)])
    assert len(load_corpus(path)) == 6000


def test_write_jsonl_round_trip_is_atomic(tmp_path):
    qs = load_questions(FIXTURES / "questions.jsonl")
    out = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(out, qs) == 3
    assert list(load_questions(out)) == list(qs)
    first = json.loads(out.read_text().splitlines()[0])
    assert "options" not in first  # optional field left out, as in the shared schema
    assert [p.name for p in out.parent.iterdir()] == ["out.jsonl"]  # no temp files left
    docs = [Document("a", "T", "x"), Document("b", "", "y")]
    write_jsonl(tmp_path / "c.jsonl", docs)
    assert list(load_corpus(tmp_path / "c.jsonl")) == docs


def test_to_dataset():
    qs = load_questions(FIXTURES / "questions.jsonl")
    ds = to_dataset(qs)
    assert len(ds) == 3 and set(ds.column_names) >= {"id", "question", "answers", "passages", "options"}
    assert ds[0]["answers"] == ["Ollam", "Ollam village"] and ds[0]["passages"][0]["supporting"] is True
    assert ds[2]["options"]["B"] == "sheep" and ds[0]["options"] is None
    docs = to_dataset(load_corpus(FIXTURES / "corpus.jsonl"))
    assert docs.column_names == ["id", "title", "text"] and len(docs) == 8


def test_pool_corpus_and_supporting_ids():
    qs = load_questions(FIXTURES / "questions.jsonl")
    docs = pool_corpus(qs)
    # q1 has 2 passages, q2 has 2 new ones, q3 none
    assert [d.id for d in docs] == ["p0", "p1", "p2", "p3"]
    assert [d.title for d in docs] == ["Mount Fennick", "Comet Ispar", "Pellham Bridge", "SS Marigold"]
    dup = Question("q9", "?", ["a"], passages=[qs[1].passages[1], qs[0].passages[0]])
    assert pool_corpus([*qs, dup]) == docs  # repeats add nothing
    index = corpus_index(docs)
    assert supporting_ids(qs[0], index) == ["p0"]
    assert supporting_ids(qs[1], index) == ["p2", "p3"]
    assert supporting_ids(qs[2], index) == []
    with pytest.raises(KeyError, match="Pellham"):
        supporting_ids(qs[1], corpus_index(docs[:2]))
    assert supporting_ids(qs[1], corpus_index(docs[:3]), strict=False) == ["p2"]
    # a separate corpus file with other ids works the same way
    corpus = load_corpus(FIXTURES / "corpus.jsonl")
    assert supporting_ids(qs[1], corpus_index(corpus)) == ["d-bridge", "d-ship"]


def test_passage_documents_dedupes_by_content_and_respects_limit_and_exclude():
    qs = list(load_questions(FIXTURES / "questions.jsonl"))
    docs = passage_documents(qs)  # supporting passages only: q1's first, q2's two
    assert [d.title for d in docs] == ["Mount Fennick", "Pellham Bridge", "SS Marigold"]
    assert all(d.id == Document("", d.title, d.text).content_hash for d in docs)
    assert [d.title for d in passage_documents(qs, gold="all")] == \
        ["Mount Fennick", "Comet Ispar", "Pellham Bridge", "SS Marigold"]
    assert passage_documents([*qs, *qs]) == docs  # a passage repeated in later questions adds nothing
    assert passage_documents(qs, limit=2) == docs[:2]
    assert passage_documents(qs, exclude={docs[1].id}) == [docs[0], docs[2]]
    with pytest.raises(ValueError, match="gold must be"):
        passage_documents(qs, gold="best")


def test_passage_hash_equals_document_hash_and_unique_by_content():
    p = Passage("Mount Fennick", "A volcano.", True)
    d = Document("any-id", "Mount Fennick", "A volcano.")
    assert p.content_hash == d.content_hash != Document("x", "Mount Fennick", "A volcano!").content_hash
    other = Document("o", "Other", "Text.")
    docs = [d, other, Document("again", d.title, d.text)]
    assert [x.id for x in unique_by_content(docs)] == [d.content_hash, other.content_hash]
    assert unique_by_content(docs, limit=1) == [Document(d.content_hash, d.title, d.text)]
    assert unique_by_content(docs, exclude={d.content_hash}) == [Document(other.content_hash, "Other", "Text.")]


@pytest.mark.parametrize(("spec", "expected"), [
    ("a/q.jsonl", ("a/q.jsonl", slice(None))), ("a/q.jsonl@0:400", ("a/q.jsonl", slice(0, 400))),
    ("q@400:", ("q", slice(400, None))), ("q@:5", ("q", slice(None, 5))), ("me@host/q.jsonl", ("me@host/q.jsonl", slice(None))),
])
def test_parse_slice(spec, expected):
    assert parse_slice(spec) == expected


def test_parse_slice_rejects_non_integers():
    with pytest.raises(ValueError, match="PATH@START:END"):
        parse_slice("q.jsonl@a:b")


# --- raw formats ---------------------------------------------------------------------------------------

def test_read_hotpotqa_raw():
    qs = read_hotpotqa_raw(RAW / "hotpot_dev.json")
    assert [q.id for q in qs] == ["hp-0001", "hp-0002"]
    q = qs[0]
    assert q.answers == ["Tomas Brandt"] and q.type == "bridge" and q.dataset == "hotpotqa"
    assert [(p.title, p.supporting) for p in q.passages] == [
        ("Pellham Bridge", True), ("Skell (river)", False), ("SS Marigold", False)]
    assert q.passages[0].text == ("The Pellham Bridge is a steel suspension bridge over the river Skell. "
                                  "It opened to traffic in 1937 and was designed by the engineer Tomas Brandt.")
    assert qs[1].answers == ["yes"] and all(p.supporting for p in qs[1].passages)


def test_read_2wiki_raw_with_and_without_aliases():
    plain = read_2wiki_raw(RAW / "2wiki_dev.json")
    assert plain[0].answers == ["Denmark"] and plain[0].type == "compositional"
    qs = read_2wiki_raw(RAW / "2wiki_dev.json", RAW / "2wiki_id_aliases.json")
    assert qs[0].answers == ["Denmark", "Kingdom of Denmark", "DK", "Danish", "Dane"]
    assert qs[1].answers == ["Comet Ispar"]  # no answer_id, no aliases
    assert [(p.title, p.supporting) for p in qs[0].passages] == [
        ("Aarvik String Quartet", True), ("Greta Hollis", True), ("Odense", False)]
    assert qs[0].passages[1].text == "Greta Hollis was a violinist born in Denmark. She taught in Odense."


def test_read_popqa_tsv():
    qs = read_popqa_tsv(RAW / "popqa.tsv")
    assert [q.id for q in qs] == ["popqa-4001", "popqa-4002", "popqa-4003"]
    assert qs[0].answers == ["violinist", "fiddler"] and qs[0].type == "occupation" and qs[0].passages == []
    # a pandas-quoted JSON cell and aliases from o_aliases, deduplicated in order
    assert qs[1].answers == ["Odense", "Odense Municipality", "Odense, Denmark"]
    assert qs[1].question == "In what city was Tomas Brandt born?" and qs[1].type == "place of birth"


def test_read_cwq_raw():
    qs = read_cwq_raw(RAW / "cwq_dev.json")
    assert qs[0].id == "WebQTest-12_aa11" and qs[0].type == "composition" and qs[0].dataset == "cwq"
    assert qs[0].answers == ["Calveran", "Calveran language", "Spanish", "Spanish language", "Castilian"]
    assert qs[1].answers == ["Skell"]


@pytest.mark.parametrize("kind,name,extra", [("hotpotqa", "hotpot_dev.json", None),
                                             ("2wiki", "2wiki_dev.json", "2wiki_id_aliases.json"),
                                             ("popqa", "popqa.tsv", None), ("cwq", "cwq_dev.json", None)])
def test_convert_raw_round_trip(tmp_path, kind, name, extra):
    out = tmp_path / f"{kind}.jsonl"
    n = convert_raw(kind, RAW / name, out, aliases_path=RAW / extra if extra else None)
    loaded = load_questions(out)
    assert n == len(loaded) >= 2
    readers = {"hotpotqa": read_hotpotqa_raw, "popqa": read_popqa_tsv, "cwq": read_cwq_raw}
    direct = read_2wiki_raw(RAW / name, RAW / extra) if kind == "2wiki" else readers[kind](RAW / name)
    assert list(loaded) == list(direct)


def test_raw_reader_errors_name_the_record(tmp_path):
    data = json.loads((RAW / "hotpot_dev.json").read_text())
    del data[1]["answer"]
    bad = tmp_path / "h.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        read_hotpotqa_raw(bad)
    assert info.value.field == "[1].answer" and "missing" in str(info.value) and str(bad) in str(info.value)
    assert len(read_hotpotqa_raw(bad, on_error="skip")) == 1
    data = json.loads((RAW / "cwq_dev.json").read_text())
    data[0]["answers"] = []
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"\[0\]\.answers"):
        read_cwq_raw(bad)
    tsv = tmp_path / "p.tsv"
    lines = (RAW / "popqa.tsv").read_text().splitlines()
    tsv.write_text("\n".join([lines[0], lines[1], lines[2].replace('"[""Odense""', '"[""Odense"""')]) + "\n")
    with pytest.raises(DataError) as info:
        read_popqa_tsv(tsv)
    assert (info.value.line, info.value.field) == (3, "possible_answers")
    with pytest.raises(DataError, match="invalid JSON"):
        (tmp_path / "x.json").write_text("[{")
        read_cwq_raw(tmp_path / "x.json")
    with pytest.raises(ValueError, match="unknown raw format"):
        convert_raw("squad", RAW / "cwq_dev.json", tmp_path / "o.jsonl")


# --- the real shared data -------------------------------------------------------------------------------

@pytest.mark.skipif(shared_data() is None, reason="../shared/data not present")
def test_all_shared_files_load_without_errors():
    root = shared_data()
    files = sorted(root.glob("*/*.jsonl"))
    assert len(files) >= 9
    for f in files:
        loaded = load_corpus(f) if f.name == "corpus.jsonl" else load_questions(f)
        assert loaded.skipped == [] and len(loaded) > 0, f
        if f.name != "corpus.jsonl" and "medical" in f.parts:
            assert all(q.options and q.answers[0] in q.options for q in loaded)
