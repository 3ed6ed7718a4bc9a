"""Training sequences use exactly the answering prompt, mask what they should, and pad dynamically."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hyperprag.core.data import Document
from hyperprag.core.prompts import answer_completion, answer_prompt
from tests.conftest import make_bos_tokenizer
from training.sequences import IGNORE, SequenceOptions, build_examples, build_texts, collate, tokenize_text

DOC = Document("d1", "Lake Vorn", "Lake Vorn lies in Tesmar. Its water is green.")
AUG = SimpleNamespace(
    qa=[SimpleNamespace(question="Where is Lake Vorn?", answer="Tesmar", full_answer="Lake Vorn is in Tesmar."),
        SimpleNamespace(question="What colour is the water?", answer="green.", full_answer=None)],
    rewrites=["Vorn is a green lake of Tesmar.", "In Tesmar lies Lake Vorn."])


def test_kinds_and_counts():
    texts = build_texts(DOC, AUG, SequenceOptions(kinds=("qa_passage", "qa_rewrite", "qa_closed", "lm_passage",
                                                         "lm_rewrite")), doc_index=4)
    kinds = [t.kind for t in texts]
    assert kinds.count("qa_passage") == 2 and kinds.count("qa_rewrite") == 4 and kinds.count("qa_closed") == 2
    assert kinds.count("lm_passage") == 1 and kinds.count("lm_rewrite") == 2
    assert all(t.doc_index == 4 for t in texts)
    assert {t.passage for t in texts if t.kind == "qa_rewrite"} == {(DOC.title, r) for r in AUG.rewrites}
    assert all(t.passage is None for t in texts if t.kind == "qa_closed")


def test_answer_styles_and_caps():
    opts = SequenceOptions(kinds=("qa_closed",), answers=("short", "full"))
    comps = [t.completion for t in build_texts(DOC, AUG, opts)]
    # the second pair has no full answer: its "full" falls back to short and is not duplicated
    assert comps == [" Tesmar.", " Tesmar. Lake Vorn is in Tesmar.", " green."]
    assert len(build_texts(DOC, AUG, SequenceOptions(kinds=("qa_rewrite",), max_qa=1, max_rewrites=1))) == 1


def test_qa_example_is_the_answering_prompt_plus_completion(tiny_tokenizer):
    tok = tiny_tokenizer
    ex, stats = build_examples(tok, DOC, AUG, SequenceOptions(kinds=("qa_passage",)))
    prompt = answer_prompt(tok, "Where is Lake Vorn?", [(DOC.title, DOC.text)])
    p_ids = tok(prompt)["input_ids"]
    c_ids = tok(answer_completion("Tesmar"), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex[0].input_ids == p_ids + c_ids
    assert ex[0].labels == [IGNORE] * len(p_ids) + c_ids  # answer-only loss
    assert ex[0].num_targets == len(c_ids)
    assert stats.per_kind == {"qa_passage": 2}
    whole, _ = build_examples(tok, DOC, AUG, SequenceOptions(kinds=("qa_passage",), answer_only=False))
    assert whole[0].labels == whole[0].input_ids


def test_truncation_cuts_the_passage_never_the_answer(tiny_tokenizer):
    tok = tiny_tokenizer
    long_doc = Document("d2", "Long", "filler words " * 200 + "The key is blue.")
    opts = SequenceOptions(kinds=("qa_passage", "qa_closed", "lm_passage"), max_length=160)
    ex, stats = build_examples(tok, long_doc, SimpleNamespace(qa=[AUG.qa[0]], rewrites=[]), opts)
    qa_passage = [e for e in ex if e.kind == "qa_passage"][0]
    assert len(qa_passage.input_ids) <= 160 and stats.truncated == 1
    text = tok.decode(qa_passage.input_ids)
    assert "Question: Where is Lake Vorn?" in text and text.endswith("The answer is Tesmar.</s>")
    assert "filler" in text  # the passage is shortened, not dropped
    lm = [e for e in ex if e.kind == "lm_passage"]
    assert len(lm) > 1 and all(len(e.input_ids) <= 160 for e in lm)  # windows, no text lost
    assert sum(len(e.input_ids) for e in lm) == len(tok(long_doc.full_text)["input_ids"])
    # a QA sequence that cannot fit even without its passage is dropped and counted
    tiny = SequenceOptions(kinds=("qa_closed",), max_length=20)
    out = tokenize_text(tok, build_texts(DOC, AUG, tiny)[0], tiny, stats)
    assert out == [] and stats.dropped == 1


def test_collate_pads_to_longest_on_the_right(tiny_tokenizer):
    ex, _ = build_examples(tiny_tokenizer, DOC, AUG, SequenceOptions(kinds=("qa_closed", "qa_passage")))
    batch = collate(ex, pad_id=tiny_tokenizer.pad_token_id)
    longest = max(len(e.input_ids) for e in ex)
    assert batch["input_ids"].shape == (len(ex), longest)
    for i, e in enumerate(ex):
        n = len(e.input_ids)
        assert batch["input_ids"][i, :n].tolist() == e.input_ids
        assert batch["attention_mask"][i].sum() == n
        assert (batch["labels"][i, n:] == IGNORE).all()
        assert (batch["input_ids"][i, n:] == tiny_tokenizer.pad_token_id).all()
    assert batch["doc_index"].tolist() == [0] * len(ex)


def test_bad_options():
    with pytest.raises(ValueError, match="kinds"):
        SequenceOptions(kinds=("qa_open",))
    with pytest.raises(ValueError, match="answer styles"):
        SequenceOptions(answers=("long",))


def test_anchor_sequences_rotate_over_the_pool(tiny_tokenizer):
    pool = [(f"General question {i}?", f"answer {i}") for i in range(5)]
    opts = SequenceOptions(kinds=("qa_closed",), anchors=2)
    texts = build_texts(DOC, AUG, opts, doc_index=2, anchor_pool=pool)
    anchors = [t for t in texts if t.kind == "anchor"]
    assert [(t.question, t.completion) for t in anchors] == [("General question 4?", " answer 4."),
                                                             ("General question 0?", " answer 0.")]
    assert all(t.passage is None for t in anchors)
    assert len(build_texts(DOC, AUG, opts)) == 2  # no pool, no anchors
    ex, stats = build_examples(tiny_tokenizer, DOC, AUG, opts, anchor_pool=pool)
    assert stats.per_kind == {"qa_closed": 2, "anchor": 2}


def test_max_qa_per_answer_keeps_the_first_forms():
    qa = [SimpleNamespace(question=f"q{i}", answer=a, full_answer=None) for i, a in enumerate("AABAB")]
    opts = SequenceOptions(kinds=("qa_closed",), max_qa_per_answer=1)
    assert [t.question for t in build_texts(DOC, SimpleNamespace(qa=qa, rewrites=[]), opts)] == ["q0", "q2"]


def test_a_tokenizer_that_adds_bos_gets_it_once_in_the_prompt_text(tiny_tokenizer):
    """Gemma-style: no chat template, BOS added by the tokenizer. The prompt text starts with the BOS, and
    the teacher's prompt ids equal what answering tokenizes (no special tokens), with exactly one BOS."""
    from hyperprag.core.prompts import bos_text

    tok = tiny_tokenizer
    assert bos_text(tok) == "" and not answer_prompt(tok, "q?").startswith("<s>")  # template, no auto BOS
    bos_tok = make_bos_tokenizer()
    assert bos_tok("a")["input_ids"][0] == bos_tok.bos_token_id == 1
    prompt = answer_prompt(bos_tok, "Where is Lake Vorn?")
    assert bos_text(bos_tok) == "<s>" and prompt.startswith("<s>Answer the question briefly.")
    answering = bos_tok(prompt, add_special_tokens=False)["input_ids"]
    assert answering[0] == 1 and answering.count(1) == 1
    ex, _ = build_examples(bos_tok, DOC, AUG, SequenceOptions(kinds=("qa_closed",)))
    assert ex[0].input_ids[:len(answering)] == answering
