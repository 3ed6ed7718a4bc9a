"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest

from hyperprag.core.data import Question
from hyperprag.core.metrics import (
    choice_accuracy,
    contains_answer,
    exact_match,
    extract_answer,
    extract_choice,
    normalize_answer,
    score,
    token_f1,
)


@pytest.mark.parametrize("raw,norm", [
    ("The Big  Cat!", "big cat"),
    ("an apple, a pear", "apple pear"),
    ("Théâtre", "théâtre"),
    ("  U.S.A.  ", "usa"),
    ("theatre", "theatre"),  # "the" only as a whole word
])
def test_normalize(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match():
    assert exact_match("The Cat.", ["cat"]) == 1.0
    assert exact_match("cats", ["cat"]) == 0.0
    assert exact_match("Detroiter", ["Detroit", "Detroiter"]) == 1.0
    assert exact_match("x", "x") == 1.0
    with pytest.raises(ValueError):
        exact_match("x", [])


@pytest.mark.parametrize("pred,gold,f1", [
    ("the big cat", "a big dog", 0.5),            # "big cat" vs "big dog": P = R = 1/2
    ("big cat", "big cat sat", 0.8),              # P = 1, R = 2/3 -> 2*(2/3)/(5/3)
    ("cat cat", "cat", 2 / 3),                    # P = 1/2, R = 1
    ("Paris", "paris", 1.0),
    ("London", "Paris", 0.0),
    ("", "Paris", 0.0),
    ("yes", "yes", 1.0),
    ("yes", "yes it is", 0.0),                    # yes/no guard (plain F1 would be 0.5)
    ("no it is not", "no", 0.0),                  # the guard works in both directions
    ("noanswer", "no answer", 0.0),
])
def test_token_f1_hand_values(pred, gold, f1):
    assert token_f1(pred, [gold]) == pytest.approx(f1)


def test_token_f1_is_max_over_aliases():
    # "big dog" vs "big dog house": P = 1, R = 2/3 -> 0.8 ; vs "big": P = 1/2, R = 1 -> 2/3
    assert token_f1("big dog", ["cat", "the big dog house", "big"]) == pytest.approx(0.8)


@pytest.mark.parametrize("gen,ans", [
    (" Chief of Protocol.", "Chief of Protocol"),
    (" Chief of Protocol. She served from 1976.", "Chief of Protocol"),
    (': "Paris". It is the capital.', "Paris"),
    (" that the film was directed by J. K. Rowling. More", "the film was directed by J. K. Rowling"),
    (" St. Louis, Missouri.\nQuestion: next", "St. Louis, Missouri"),
    (" 3.5 million people.", "3.5 million people"),
    (" \u201cThe Beatles\u201d.", "The Beatles"),
    ("The answer is Detroit.", "Detroit"),       # a decode that kept the pre-fill
    (" 'Hamlet'", "Hamlet"),
    (" yes! Clearly.", "yes"),
    ("\n\nParis.\nMore", "Paris"),                # blank lines after the pre-fill are skipped
    ("", ""),
])
def test_extract_answer(gen, ans):
    assert extract_answer(gen) == ans


OPTIONS = {"A": "A decrease in pressure", "B": "Hyperstabilization of microtubules", "C": "Cross-linking of DNA",
           "D": "None"}


@pytest.mark.parametrize("gen,letter", [
    (" B", "B"), (" (B)", "B"), (" B.", "B"), (" B) Hyperstabilization", "B"), (" B: because", "B"),
    (" option C", "C"), (": (D) None", "D"), (" C because it binds", "C"),
    (" Hyperstabilization of microtubules.", "B"),
    (" a decrease in pressure", "A"),             # option text that starts with the word "A"
    (" A", "A"), (" A.", "A"),
    (" cross-linking of DNA, which kills cells", "C"),  # option text, then more words
    (" E", None), (" something else", None), ("", None),
])
def test_extract_choice(gen, letter):
    assert extract_choice(gen, OPTIONS) == letter


def test_extract_choice_yes_no_maybe():
    opts = {"A": "yes", "B": "no", "C": "maybe"}
    assert extract_choice(" yes, the abstract shows it.", opts) == "A"
    assert extract_choice(" No.", opts) == "B"
    assert extract_choice(" maybe", opts) == "C"
    assert extract_choice(" not sure", opts) is None
    assert choice_accuracy(" no", opts, "B") == 1.0 and choice_accuracy(" yes", opts, "B") == 0.0


def test_contains_answer():
    assert contains_answer("He was born in Detroit, Michigan", ["Detroit"]) == 1.0
    assert contains_answer("He was born in Detroiter", ["Detroit"]) == 0.0  # whole words only


def test_score_open_and_multiple_choice():
    q = Question("q", "Where?", ["Detroit", "Motor City"])
    assert score(" the Motor City. It is big.", q) == {"em": 1.0, "f1": 1.0, "contains": 1.0}
    s = score(" Detroit, Michigan.", q)
    assert s["em"] == 0.0 and s["f1"] == pytest.approx(2 / 3) and s["contains"] == 1.0
    assert score("Detroit", q, extract=False)["em"] == 1.0
    assert score(extract_answer(" Detroit."), q) == score(" Detroit.", q)  # extraction is idempotent
    mc = Question("m", "Which?", ["B", "sheep"], options={"A": "cow", "B": "sheep", "C": "goat"})
    assert score(" B.", mc) == {"acc": 1.0}
    assert score(" sheep", mc) == {"acc": 1.0}
    assert score(" goat", mc) == {"acc": 0.0}


def test_answer_is_final_never_fires_before_the_extracted_answer_is_fixed():
    """Property: on random texts, wherever answer_is_final(prefix) holds, extract_answer(prefix) equals
    extract_answer of every longer text, so stopping generation there changes no answer."""
    import random

    from hyperprag.core.metrics import answer_is_final, extract_answer

    rng = random.Random(0)
    alphabet = ["a", "b", " ", ".", "\n", ":", "3", "Dr", "J", "!", "that ", "The answer is", '"']
    fired = 0
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        final_at = next((i for i in range(1, len(text) + 1) if answer_is_final(text[:i])), None)
        if final_at is None:
            continue
        fired += 1
        for end in range(final_at, len(text) + 1):
            assert extract_answer(text[:end]) == extract_answer(text), (text, final_at, end)
    assert fired > 100


@pytest.mark.parametrize(("text", "final"), [
    (" Paris", False), (" Paris.", False), (" Paris. It", True), (" Paris\nIt", True), (" 3.5 metres", False),
    (" Dr. Who", False), (" J. K. Rowling.", False), (" J. K. Rowling. She", True), ("", False)])
def test_answer_is_final_examples(text, final):
    from hyperprag.core.metrics import answer_is_final

    assert answer_is_final(text) is final
