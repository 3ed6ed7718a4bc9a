"""The medical sets' documents, corpus, coverage and chance levels; the accuracy interval."""

from __future__ import annotations

import pytest

from hyperprag.core.data import Passage, Question, write_jsonl
from hyperprag.core.medical import (
    chance,
    load_set,
    medical_corpus,
    option_support,
    own_document,
    own_documents,
)
from hyperprag.core.metrics import wilson_interval

YN = {"A": "yes", "B": "no", "C": "maybe"}


def pubmed(i: int, answer: str = "A") -> Question:
    return Question(f"pubmedqa-{i}", f"Does drug {i} work?", [answer, YN[answer]], "pubmedqa", None,
                    [Passage("Methods", f"We gave drug {i} to mice.", True),
                     Passage("Results", "It lowered the fever.", True)], options=dict(YN))


def bioasq(i: int) -> Question:
    return Question(f"bioasq-{i}", "Is X a kinase?", ["A", "yes"], "bioasq", "yesno",
                    [Passage("123456", "X is a kinase.", True), Passage("654321", f"Snippet {i}.", True)],
                    options={"A": "yes", "B": "no"})


def test_own_document_joins_passages_keeps_section_names_and_drops_ids():
    q = own_document(pubmed(1), "Abstract")
    assert [(p.title, p.text) for p in q.passages] == [("Abstract", "Methods: We gave drug 1 to mice. Results: "
                                                                     "It lowered the fever.")]
    assert own_document(bioasq(2), "Snippets").passages[0].text == "X is a kinase. Snippet 2."
    cut = own_document(pubmed(1), "Abstract", max_chars=30).passages[0].text
    assert len(cut) <= 30 and cut == "Methods: We gave drug 1 to"  # cut at a word boundary
    with pytest.raises(ValueError, match="pubmedqa-9 has no passages"):
        own_document(Question("pubmedqa-9", "q", ["A", "yes"], passages=[], options=dict(YN)), "Abstract")


def test_own_documents_are_found_by_gold_retrieval_and_the_corpus_is_deduplicated():
    from inference.answer import Retrieval

    qs, docs = own_documents([pubmed(1), pubmed(2), pubmed(1)], "pubmedqa")
    assert len(docs) == 2  # the repeated question's abstract once
    found = Retrieval({d.id: d for d in docs}, top_k=1, gold=True).documents_for(qs)
    assert found[0] == found[2] != found[1] and all(len(f) == 1 for f in found)
    corpus = medical_corpus([pubmed(1), pubmed(1)], [bioasq(1), bioasq(2)])
    texts = sorted(d.text for d in corpus)
    assert texts == sorted(["Methods: We gave drug 1 to mice. Results: It lowered the fever.", "X is a kinase.",
                            "Snippet 1.", "Snippet 2."])


def test_option_support_counts_the_gold_options_words_against_the_others():
    q = Question("m1", "Which nerve?", ["B", "facial nerve palsy"], options={"A": "optic nerve damage",
                                                                          "B": "facial nerve palsy"})
    gold, wrong = option_support(q, ["The facial nerve was cut.", "A palsy followed."])
    assert gold == pytest.approx(1.0) and wrong == pytest.approx(1 / 3)  # "nerve" of optic/nerve/damage
    assert option_support(q, []) == (0.0, 0.0)


def test_chance_levels():
    qs = [pubmed(1, "A"), pubmed(2, "A"), pubmed(3, "B"), bioasq(1)]  # yes, yes, no, yes (2 options)
    uniform, majority = chance(qs)
    assert uniform == pytest.approx((3 * (1 / 3) + 1 / 2) / 4) and majority == pytest.approx(3 / 4)


def test_load_set_reads_the_file_and_names_unknown_sets(tmp_path):
    write_jsonl(tmp_path / "pubmedqa.jsonl", [pubmed(1), pubmed(2)])
    assert [q.id for q in load_set(tmp_path, "pubmedqa")] == ["pubmedqa-1", "pubmedqa-2"]
    with pytest.raises(ValueError, match="unknown medical set 'medqa2'"):
        load_set(tmp_path, "medqa2")


@pytest.mark.parametrize(("k", "n", "low", "high"), [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634),
                                                      (54, 100, 0.4426, 0.6344)])
def test_wilson_interval_matches_values_worked_by_hand(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)
