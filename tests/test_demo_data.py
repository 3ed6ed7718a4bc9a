"""The project's own demo data and synthetic generator: schema, ids, answers copied from the text, questions
reworded (no 6-word run from the passage), train/unseen disjoint, generator deterministic and fast."""

from __future__ import annotations

import json
import re

import pytest

from hyperprag.core.data import Document, Question, load_corpus, load_questions
from hyperprag.demo import (
    SPLITS,
    corpus_path,
    demo_dir,
    load_demo_corpus,
    load_demo_questions,
    questions_path,
)
from hyperprag.demo.synth import KINDS, generate_synthetic, write_synthetic

QUESTION_KEYS = {"id", "dataset", "type", "question", "answers", "passages"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def copied_window(question: str, passage: str, n: int = 6) -> str | None:
    """The first n-word run of the question that also occurs in the passage, if any."""
    pw = words(passage)
    grams = {tuple(pw[i:i + n]) for i in range(len(pw) - n + 1)}
    qw = words(question)
    return next((" ".join(qw[i:i + n]) for i in range(len(qw) - n + 1) if tuple(qw[i:i + n]) in grams), None)


def n_sentences(text: str) -> int:
    return len(_SENTENCE_END.split(text.strip()))


def raw_records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo() -> dict[str, tuple[list[Document], list[Question]]]:
    return {s: (load_demo_corpus(s), load_demo_questions(s)) for s in SPLITS}


def test_files_exist_and_match_raw_schema():
    assert demo_dir().is_dir() and (demo_dir() / "README.md").is_file()
    for split in SPLITS:
        for rec in raw_records(corpus_path(split)):
            assert set(rec) == {"id", "title", "text"}
            assert all(isinstance(v, str) and v.strip() for v in rec.values())
        for rec in raw_records(questions_path(split)):
            assert set(rec) == QUESTION_KEYS and rec["dataset"] == "demo" and rec["type"] == "fact"
            assert [set(p) for p in rec["passages"]] == [{"title", "text", "supporting"}]
            assert rec["passages"][0]["supporting"] is True
    for rec in raw_records(questions_path("general")):
        assert set(rec) == QUESTION_KEYS and rec["passages"] == [] and rec["type"] == "general"


def test_counts_and_unique_ids(demo):
    assert [len(demo[s][0]) for s in SPLITS] == [40, 20]
    assert [len(demo[s][1]) for s in SPLITS] == [80, 40]
    general = load_questions(questions_path("general"))
    assert len(general) == 12
    ids = [d.id for s in SPLITS for d in demo[s][0]] + [q.id for s in SPLITS for q in demo[s][1]]
    ids += [q.id for q in general]
    assert len(ids) == len(set(ids))
    for split in SPLITS:
        assert [d.id for d in demo[split][0]] == [f"demo-{split}-{k:03d}" for k in range(1, len(demo[split][0]) + 1)]


def test_questions_link_to_their_document(demo):
    for split in SPLITS:
        docs, questions = demo[split]
        by_id = {d.id: d for d in docs}
        for d in docs:
            assert [q.id for q in questions if q.id.rsplit("-", 1)[0] == d.id] == [f"{d.id}-q1", f"{d.id}-q2"]
        for q in questions:
            doc = by_id[q.id.rsplit("-", 1)[0]]
            assert [(p.title, p.text, p.supporting) for p in q.passages] == [(doc.title, doc.text, True)]


def test_documents_are_short_and_dense(demo):
    for split in SPLITS:
        for d in demo[split][0]:
            assert 60 <= len(d.text.split()) <= 110, (d.id, len(d.text.split()))
            assert 3 <= n_sentences(d.text) <= 5, (d.id, n_sentences(d.text))


def test_answers_verbatim_and_questions_reworded(demo):
    for split in SPLITS:
        docs = {d.id: d for d in demo[split][0]}
        for q in demo[split][1]:
            text = docs[q.id.rsplit("-", 1)[0]].text
            for a in q.answers:
                assert a in text, (q.id, a)
                assert 1 <= len(a.split()) <= 4, (q.id, a)
            assert copied_window(q.question, text) is None, (q.id, copied_window(q.question, text))
            assert q.question.endswith("?")


def test_train_and_unseen_disjoint(demo):
    (train_docs, train_qs), (unseen_docs, unseen_qs) = demo["train"], demo["unseen"]
    for key in ("id", "title", "text"):
        assert not {getattr(d, key) for d in train_docs} & {getattr(d, key) for d in unseen_docs}
    assert not {q.question for q in train_qs} & {q.question for q in unseen_qs}


def test_copied_window_detects_a_copy():
    passage = "The Orvantis Bridge was finished in 1893 and spans the Kellin River."
    assert copied_window("Is it true that the Orvantis Bridge was finished in 1893?", passage) is not None
    assert copied_window("In what year was the Orvantis Bridge completed?", passage) is None


def test_synth_deterministic_and_distinct():
    d1, q1 = generate_synthetic(300, seed=7)
    d2, q2 = generate_synthetic(300, seed=7)
    assert d1 == d2 and q1 == q2
    d3, _ = generate_synthetic(300, seed=8)
    assert [d.text for d in d1] != [d.text for d in d3]
    assert generate_synthetic(50, seed=7)[0] == d1[:50]  # a prefix does not depend on n
    assert len({d.title for d in d1}) == len({d.text for d in d1}) == 300


def test_synth_documents_and_questions_well_formed():
    docs, questions = generate_synthetic(500, seed=0)
    by_id = {d.id: d for d in docs}
    per_doc: dict[str, int] = {}
    kinds = set()
    for q in questions:
        doc = by_id[q.id.rsplit("-", 1)[0]]
        per_doc[doc.id] = per_doc.get(doc.id, 0) + 1
        kinds.add(q.type.split(":")[0])
        assert len(q.answers) == 1 and q.answers[0] in doc.text, (q.id, q.answers)
        assert 1 <= len(q.answers[0].split()) <= 4
        assert copied_window(q.question, doc.text) is None, (q.id, q.question, doc.text)
        assert [(p.title, p.text) for p in q.passages] == [(doc.title, doc.text)]
        assert q.question.endswith("?") and "{" not in q.question
    assert set(per_doc) == set(by_id) and set(per_doc.values()) <= {2, 3}
    assert kinds == set(KINDS)
    for d in docs:
        assert 3 <= n_sentences(d.text) <= 5, d.text
        assert "{" not in d.text and d.text[0].isupper()


def test_synth_documents_are_distinct():
    docs, _ = generate_synthetic(2000, seed=0)
    assert len({d.text for d in docs}) == 2000


def test_write_synthetic_roundtrip(tmp_path):
    corpus_file, questions_file = write_synthetic(tmp_path / "synth", 40, seed=3)
    docs, questions = generate_synthetic(40, seed=3)
    assert list(load_corpus(corpus_file)) == docs
    assert list(load_questions(questions_file)) == questions


def test_synth_prose_style_refers_back_and_keeps_answers_in_text():
    docs, questions = generate_synthetic(300, seed=1, style="prose")
    assert generate_synthetic(300, seed=1, style="prose") == (docs, questions)
    by_id = {d.id: d for d in docs}
    assert len(by_id) == 300 and all(i.startswith("prose-1-") for i in by_id)  # never clash with 'short' ids
    per_doc: dict[str, int] = {}
    for q in questions:
        doc = by_id[q.id.rsplit("-", 1)[0]]
        per_doc[doc.id] = per_doc.get(doc.id, 0) + 1
        assert len(q.answers) == 1 and q.answers[0] in doc.text, (q.id, q.answers)
        assert copied_window(q.question, doc.text) is None, (q.id, q.question, doc.text)
        assert doc.title in q.question or doc.title.lower() in q.question.lower()  # questions name it in full
    assert set(per_doc.values()) <= {3, 4}
    words = [len(d.text.split()) for d in docs]
    assert sum(words) / len(words) > 1.4 * sum(len(d.text.split()) for d in generate_synthetic(300)[0]) / 300
    # six fact sentences each, but later ones mostly name the entity by a referent ("the town", a surname)
    full_mentions = [d.text.count(d.title) for d in docs]
    assert sum(full_mentions) / len(docs) < 4 and all(m >= 1 for m in full_mentions)
    assert sum(", and " in d.text for d in docs) > 0.3 * len(docs)
    assert all(d.text[0].isupper() and "{" not in d.text and ". ." not in d.text for d in docs)


def test_synth_rejects_an_unknown_style():
    with pytest.raises(ValueError, match="style 'poem'"):
        generate_synthetic(3, style="poem")
