"""Document augmentation: rule spans and questions, paraphrases, LLM QA parsing/filtering/retries, cache."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch

from hyperprag.core.data import Document
from training.augment import (
    Augmentation,
    QAPair,
    analyze,
    augment_documents,
    coverage,
    find_spans,
    llm_qa,
    paraphrase,
    parse_qa,
    rewrite_problem,
    rule_qa,
    summarize,
)
from training.augment.llm import check_pair
from training.augment.text import normalize, split_sentences, words

BRIDGE = Document("bridge", "Orvantis Bridge",
                  "The Orvantis Bridge is a red suspension bridge in Tesmar. It was finished in 1893. "
                  "The bridge is 120 metres long and was designed by John Smith. It carries 5,000 cars per day.")
SCULPTOR = Document("sculptor", "Mara Velt",
                    "Mara Velt (born 4 March 1961) is a Danish sculptor. She studied at the Royal Academy in "
                    "Copenhagen, and she won the Eckersberg Medal in 1994. Her best-known work, \"Salt Wind\", is "
                    "made of granite and weighs 12 tonnes.")
LAKE = Document("lake", "Lake Vorn",
                "Lake Vorn is a lake of Tesmar. Its water is green. Fishermen use small boats on calm mornings. "
                "About 300 people live on its shore.")
DOCS = [BRIDGE, SCULPTOR, LAKE]

EXPECTED_SPANS = {
    "bridge": {("a red suspension bridge", "description"), ("red", "colour"), ("Tesmar", "place"),
               ("1893", "year"), ("120 metres", "quantity"), ("John Smith", "person"), ("5,000", "count")},
    "sculptor": {("4 March 1961", "date"), ("a Danish sculptor", "description"), ("Danish", "nationality"),
                 ("Royal Academy", "place"), ("Copenhagen", "place"), ("Eckersberg Medal", "name"),
                 ("1994", "year"), ("Salt Wind", "quoted"), ("granite", "material"), ("12 tonnes", "quantity")},
    "lake": {("a lake of Tesmar", "description"), ("Tesmar", "name"), ("green", "colour"),
             ("on calm mornings", "clause"), ("300", "count")},
}
PRONOUNS = {"he", "she", "it", "they", "his", "her", "its", "their"}


# ----------------------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------------------

def test_split_sentences_keeps_abbreviations_initials_and_decimals():
    text = "Dr. J. R. Smith lives in St. Louis. The rod is 3.5 m long. It cost $1.2 million in the U.S. and more. Done!"
    assert split_sentences(text) == ["Dr. J. R. Smith lives in St. Louis.", "The rod is 3.5 m long.",
                                     "It cost $1.2 million in the U.S. and more.", "Done!"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.id)
def test_rule_spans_are_exactly_the_facts(doc):
    assert {(s.text, s.kind) for s in find_spans(doc)} == EXPECTED_SPANS[doc.id]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.id)
def test_rule_qa_covers_every_span_and_names_the_title(doc):
    facts = analyze(doc)
    qa = rule_qa(doc, facts=facts)
    cov = coverage(facts.spans, qa)
    assert cov["coverage"] == 1.0 and cov["covered"] == cov["spans"] == len(EXPECTED_SPANS[doc.id])
    assert cov["by_source"] == {"rules": len(facts.spans), "llm": 0}
    answers = {normalize(q.answer) for q in qa}
    assert {normalize(t) for t, _ in EXPECTED_SPANS[doc.id]} <= answers  # every span is some pair's answer
    for q in qa:
        assert q.source == "rules"
        assert normalize(doc.title) in normalize(q.question)  # closed-book answerable
        assert f" {normalize(q.answer)} " not in f" {normalize(q.question)} "  # the answer is not given away
        assert normalize(q.answer) in normalize(q.full_answer)
    assert len({q.question for q in qa}) == len(qa)


def test_rule_question_forms():
    qa = {(q.question, q.answer) for q in rule_qa(BRIDGE)}
    assert ("When was Orvantis Bridge finished?", "1893") in qa  # wh-question with reordering
    assert ("Fill in the blank about Orvantis Bridge: Orvantis Bridge was finished in ____.", "1893") in qa
    assert ("Complete the fact about Orvantis Bridge: Orvantis Bridge was finished in ...", "1893") in qa
    assert ("What is the Orvantis Bridge?", "a red suspension bridge") in qa
    assert ("Orvantis Bridge carries how many cars per day?", "5,000") in qa
    sculptor = {(q.question, q.answer) for q in rule_qa(SCULPTOR)}
    assert ("When was Mara Velt born?", "4 March 1961") in sculptor
    assert ("Who is Mara Velt?", "a Danish sculptor") in sculptor
    assert ("What nationality is Mara Velt?", "Danish") in sculptor
    # at most max_per_span forms per span; any prefix covers as many facts as it can
    one = rule_qa(BRIDGE, max_per_span=1)
    assert len(one) == len(EXPECTED_SPANS["bridge"])
    full = rule_qa(BRIDGE)
    assert full[:len(one)] == one and coverage(find_spans(BRIDGE), full[:len(one)])["coverage"] == 1.0


def test_pronouns_resolve_to_the_title():
    sentences = analyze(SCULPTOR).sentences
    assert sentences[1].startswith("Mara Velt studied") and sentences[2].startswith("Mara Velt's best-known")
    assert analyze(BRIDGE).sentences[1] == "Orvantis Bridge was finished in 1893."  # "It" in a non-person text


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.id)
def test_paraphrase_keeps_every_sentence_content(doc):
    paras = paraphrase(doc, n=2, seed=0)
    assert len(paras) == 2 and len(set(paras)) == 2
    assert paraphrase(doc, n=2, seed=0) == paras  # deterministic per seed
    original = set(words(doc.text)) - PRONOUNS
    for p in paras:
        assert p != doc.text
        assert original <= set(words(p)), original - set(words(p))
        for span in find_spans(doc):
            assert span.text in p


def test_rewrite_fidelity_check():
    facts = analyze(BRIDGE)
    assert rewrite_problem(facts, BRIDGE.text, BRIDGE.text).startswith("rewrite_near_copy")
    assert rewrite_problem(facts, BRIDGE.text, "").startswith("rewrite_empty")
    lost = BRIDGE.text.replace("1893", "1901") + " It is old."
    assert rewrite_problem(facts, BRIDGE.text, lost).startswith("rewrite_missing_span: '1893'")
    good = ("Spanning Tesmar, the Orvantis Bridge is a red suspension bridge; work on it ended in 1893. "
            "John Smith designed the 120 metres long structure, which 5,000 cars cross each day.")
    assert rewrite_problem(facts, BRIDGE.text, good) is None


# ----------------------------------------------------------------------------------------------------------
# LLM path with a scripted model
# ----------------------------------------------------------------------------------------------------------

class ScriptedModel:
    """A stand-in causal LM: generate() appends the reply `script(prompt, call_index)` to each prompt."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script = tokenizer, script
        self.calls: list[dict] = []
        self.config = SimpleNamespace(name_or_path="scripted")
        self.name_or_path_hyperprag = "scripted"

    def parameters(self):
        return iter([torch.zeros(1)])

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        self.calls.append({"rows": input_ids.shape[0], **kwargs})
        prompts = self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)
        rows = [self.tokenizer(self.script(p, len(self.calls)), add_special_tokens=False)["input_ids"][:max_new_tokens]
                for p in prompts]
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [self.tokenizer.pad_token_id] * (width - len(r)) for r in rows], dtype=torch.long)
        return torch.cat([input_ids, new.reshape(len(rows), width)], dim=1)


def _is_qa_prompt(prompt: str) -> bool:
    return "questions about the passage" in prompt


BRIDGE_JSON = ('When was the Orvantis Bridge finished?", "answer": "1893"}, '
               '{"question": "Who designed the bridge?", "answer": "John Smith", "full_answer": "John Smith did."}, '
               '{"question": "What colour is the river?", "answer": "purple"}, '
               '{"question": "Where is the Orvantis Bridge?", "answer": "Tesmar"}]')
LAKE_BROKEN = ('What is Lake Vorn?" "answer": "a lake of Tesmar"} {"question": "What colour is the water?", '
               '"answer": "green",, "question": "How many people live on the shore?", "answer": "300" ')


def test_parse_qa_json_regex_and_lines():
    pairs, how = parse_qa(BRIDGE_JSON)
    assert how == "json" and [p["answer"] for p in pairs] == ["1893", "John Smith", "purple", "Tesmar"]
    assert pairs[1]["full_answer"] == "John Smith did."
    truncated, how = parse_qa(BRIDGE_JSON[:BRIDGE_JSON.index("purple")])  # cut inside the third object
    assert how == "json" and [p["answer"] for p in truncated] == ["1893", "John Smith"]
    broken, how = parse_qa(LAKE_BROKEN)
    assert how == "regex" and [p["answer"] for p in broken] == ["a lake of Tesmar", "green", "300"]
    lines, how = parse_qa('"}]\nQ: Where is Lake Vorn?\nA: Tesmar\n2. Question: What colour is it?\nAnswer: green',
                          prefill="")
    assert how == "lines" and [(p["question"], p["answer"]) for p in lines] == [
        ("Where is Lake Vorn?", "Tesmar"), ("What colour is it?", "green")]
    assert parse_qa("the the the the") == ([], "none")


def test_check_pair_reasons():
    facts = analyze(LAKE)

    def reason(question, answer):
        return check_pair(LAKE, facts, {"question": question, "answer": answer})[1]

    assert reason("How many people live on the shore?", "300.") == ""
    assert reason("Where?", "Tesmar") == "empty"
    assert reason("Vorn Vorn Vorn Vorn", "300") == "bad_question"
    assert reason("What is the lake?", "a lake that is very deep and cold and far away in the north of Tesmar") \
        == "long_answer"
    assert reason("How many people live on the shore?", "3000") == "ungrounded"
    assert reason("Which lake is in Tesmar?", "Lake Vorn") == "answer_is_title"
    assert reason("Do people on the shore of Tesmar fish?", "Tesmar") == "answer_in_question"
    assert reason("Lake Vorn is a lake of Tesmar?", "Tesmar") == "copied_question"
    qa, _ = check_pair(LAKE, facts, {"question": "How many people live on the shore?", "answer": "300"})
    assert qa == QAPair("Regarding Lake Vorn, how many people live on the shore?", "300",
                        "About 300 people live on its shore.", "llm")


def test_llm_qa_parses_filters_and_records(tiny_tokenizer):
    def script(prompt, call):
        return BRIDGE_JSON if "Orvantis" in prompt else LAKE_BROKEN

    model = ScriptedModel(tiny_tokenizer, script)
    (bridge_qa, bridge_fail), (lake_qa, lake_fail) = llm_qa([BRIDGE, LAKE], model, tiny_tokenizer, n=3,
                                                            max_retries=2, max_new_tokens=4000)
    assert len(model.calls) == 1 and model.calls[0]["rows"] == 2 and model.calls[0]["do_sample"] is False
    assert [q.answer for q in bridge_qa] == ["1893", "John Smith", "Tesmar"]  # "purple" is not in the passage
    assert all(q.source == "llm" for q in bridge_qa + lake_qa)
    assert bridge_qa[1].full_answer == "The bridge is 120 metres long and was designed by John Smith."
    assert bridge_qa[1].question == "Regarding Orvantis Bridge, who designed the bridge?"
    assert bridge_fail == ["llm_qa_ungrounded: 1 pairs dropped"]
    assert [q.answer for q in lake_qa] == ["a lake of Tesmar", "green", "300"] and lake_fail == []


def test_llm_qa_retries_are_bounded(tiny_tokenizer):
    def script(prompt, call):
        if "Orvantis" in prompt:
            return BRIDGE_JSON
        # never grounded, a copied question, an answer that is in its question, a degenerate question
        return ('Where is Atlantis?", "answer": "under the sea"}, {"question": "Lake Vorn is a lake of Tesmar?", '
                '"answer": "Tesmar"}, {"question": "Is Lake Vorn green?", "answer": "green"}, '
                '{"question": "Vorn Vorn Vorn Vorn", "answer": "300"}]')

    model = ScriptedModel(tiny_tokenizer, script)
    (bridge_qa, _), (lake_qa, lake_fail) = llm_qa([BRIDGE, LAKE], model, tiny_tokenizer, n=3, max_retries=2,
                                                  max_new_tokens=4000)
    assert len(model.calls) == 3  # one batch of both, then two retries of the lake only
    assert [c["rows"] for c in model.calls] == [2, 1, 1]
    assert [c["do_sample"] for c in model.calls] == [False, True, True]
    assert len(bridge_qa) == 3 and lake_qa == []
    assert lake_fail == ["llm_qa_answer_in_question: 3 pairs dropped", "llm_qa_bad_question: 3 pairs dropped",
                         "llm_qa_copied_question: 3 pairs dropped",
                         "llm_qa_ungrounded: 3 pairs dropped", "llm_qa_short: 0/3 grounded pairs after 3 attempts"]
    model.calls.clear()
    llm_qa([LAKE], model, tiny_tokenizer, n=3, max_retries=0, max_new_tokens=4000)
    assert len(model.calls) == 1


def test_llm_qa_unparsed_output_is_recorded(tiny_tokenizer):
    model = ScriptedModel(tiny_tokenizer, lambda p, c: "What is the full answer to the question " * 3)
    [(pairs, fails)] = llm_qa([BRIDGE], model, tiny_tokenizer, n=2, max_retries=1, max_new_tokens=4000)
    assert pairs == [] and len(model.calls) == 2
    assert fails == ["llm_qa_unparsed: 2 of 2 outputs had no QA pair",
                     "llm_qa_short: 0/2 grounded pairs after 2 attempts"]


# ----------------------------------------------------------------------------------------------------------
# augment_documents: methods, fallback, cache, summary
# ----------------------------------------------------------------------------------------------------------

def _good_script(prompt, call):
    if _is_qa_prompt(prompt):
        return BRIDGE_JSON if "Orvantis" in prompt else LAKE_BROKEN
    if "Orvantis" in prompt:  # a rewrite that keeps every fact
        return ("Spanning Tesmar, the Orvantis Bridge is a red suspension bridge; work on it ended in 1893. "
                "John Smith designed the 120 metres long structure, which 5,000 cars cross each day.")
    return "Lake Vorn is a lake."  # drops facts: must fall back to a rule paraphrase


def test_augment_rules_llm_and_cache(tiny_tokenizer, tmp_path):
    model = ScriptedModel(tiny_tokenizer, _good_script)
    augs = augment_documents([BRIDGE, LAKE], method="rules+llm", model=model, tokenizer=tiny_tokenizer,
                             cache_dir=tmp_path, n_rewrites=1, max_new_tokens=4000)
    calls = len(model.calls)
    assert calls == 2  # one rewrite batch, one QA batch: every document got its pairs at once
    bridge, lake = augs
    assert (bridge.doc_id, bridge.content_hash) == ("bridge", BRIDGE.content_hash)
    assert bridge.rewrites[0].startswith("Spanning Tesmar") and bridge.failures == [
        "llm_qa_ungrounded: 1 pairs dropped"]
    assert {q.source for q in bridge.qa} == {"rules", "llm"}
    assert bridge.coverage["coverage"] == 1.0 and bridge.coverage["by_source"]["llm"] == 3
    assert lake.failures[0].startswith("rewrite_too_short") and lake.rewrites == paraphrase(LAKE, n=1)
    assert len(list(tmp_path.glob("*.json"))) == 2

    again = augment_documents([BRIDGE, LAKE], method="rules+llm", model=model, tokenizer=tiny_tokenizer,
                              cache_dir=tmp_path, n_rewrites=1, max_new_tokens=4000)
    assert len(model.calls) == calls  # cache hit: generate not called again
    assert [a.to_dict() for a in again] == [a.to_dict() for a in augs]
    renamed = augment_documents([Document("other-id", BRIDGE.title, BRIDGE.text)], method="rules+llm",
                                model=model, tokenizer=tiny_tokenizer, cache_dir=tmp_path, n_rewrites=1,
                                max_new_tokens=4000)
    assert len(model.calls) == calls and renamed[0].doc_id == "other-id"
    rules = augment_documents([BRIDGE], method="rules", cache_dir=tmp_path)  # another method: another entry
    assert len(list(tmp_path.glob("*.json"))) == 3 and {q.source for q in rules[0].qa} == {"rules"}
    record = json.loads(next(tmp_path.glob(f"{BRIDGE.content_hash}-*.json")).read_text())
    assert set(record) == {"meta", "augmentation"}


def test_failed_llm_still_gets_rule_qa(tiny_tokenizer):
    model = ScriptedModel(tiny_tokenizer, lambda p, c: "I cannot do that.")
    [aug] = augment_documents([BRIDGE], method="llm", model=model, tokenizer=tiny_tokenizer, n_rewrites=2,
                              max_retries=1, max_new_tokens=4000)
    assert len(model.calls) == 3  # rewrites, QA, one QA retry
    assert aug.qa == rule_qa(BRIDGE) and aug.coverage["coverage"] == 1.0
    assert aug.rewrites == paraphrase(BRIDGE, n=2)
    codes = [f.split(":")[0] for f in aug.failures]
    assert codes == ["rewrite_too_short", "rewrite_too_short", "llm_qa_unparsed", "llm_qa_short"]


def test_llm_only_keeps_llm_pairs_when_enough(tiny_tokenizer):
    model = ScriptedModel(tiny_tokenizer, _good_script)
    [aug] = augment_documents([BRIDGE], method="llm", model=model, tokenizer=tiny_tokenizer, n_rewrites=1,
                              max_new_tokens=4000)
    assert {q.source for q in aug.qa} == {"llm"} and len(aug.qa) == 3
    assert 0 < aug.coverage["coverage"] < 1  # three pairs do not cover all seven facts
    assert aug.coverage["by_source"] == {"rules": 0, "llm": 3}


def test_augment_model_is_loaded_only_when_needed(tiny_tokenizer, tmp_path, monkeypatch):
    import hyperprag.core.models as models

    loads = []

    def fake_load(name, dtype="float32", device="cpu"):
        loads.append((name, dtype, device))
        return ScriptedModel(tiny_tokenizer, _good_script), tiny_tokenizer

    monkeypatch.setattr(models, "load_base_model", fake_load)
    base = ScriptedModel(tiny_tokenizer, lambda p, c: pytest.fail("the base model must not augment"))
    augs = augment_documents([BRIDGE], method="rules+llm", model=base, tokenizer=tiny_tokenizer,
                             augment_model="big-instruct", cache_dir=tmp_path, n_rewrites=1, max_new_tokens=4000)
    assert loads == [("big-instruct", "float32", "cpu")] and {q.source for q in augs[0].qa} == {"rules", "llm"}
    augment_documents([BRIDGE], method="rules+llm", augment_model="big-instruct", cache_dir=tmp_path, n_rewrites=1,
                      max_new_tokens=4000)
    assert len(loads) == 1  # everything cached: nothing to load


def test_augment_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        augment_documents([BRIDGE], method="magic")
    with pytest.raises(ValueError, match="needs model and tokenizer"):
        augment_documents([BRIDGE], method="llm")
    with pytest.raises(ValueError, match="source"):
        QAPair("q", "a", "", source="human")


def test_records_round_trip_and_summary():
    augs = augment_documents(DOCS)
    for a in augs:
        assert Augmentation.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    a = Augmentation("x", "h", qa=[QAPair("q?", "a", "a.", "llm")], failures=["llm_qa_short: 1/3", "rewrite_empty: x"],
                     coverage={"coverage": 0.5})
    s = summarize([*augs, a])
    n_rules = sum(len(x.qa) for x in augs)
    assert s["documents"] == 4 and s["qa_by_source"] == {"rules": n_rules, "llm": 1}
    assert s["qa_pairs"] == n_rules + 1 and s["rewrites"] == 6
    assert s["failures"] == {"llm_qa_short": 1, "rewrite_empty": 1} and s["documents_with_failures"] == 1
    assert s["mean_coverage"] == pytest.approx((3 * 1.0 + 0.5) / 4)


# ----------------------------------------------------------------------------------------------------------
# The real embedded model
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_smollm_rules_plus_llm_is_bounded(tmp_path):
    from hyperprag.core.models import load_base_model

    model, tokenizer = load_base_model("smollm2-135m")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared CPU, oversubscribed threads make generation 10x slower
    docs = [Document("v", "Lake Vorn", "Lake Vorn is a lake of Tesmar. About 300 people live on its shore."),
            Document("k", "Kell Bridge", "The Kell Bridge was built in 1871 by Ilsa Brandt.")]
    try:
        augs = augment_documents(docs, method="rules+llm", model=model, tokenizer=tokenizer, cache_dir=tmp_path,
                                 n_rewrites=1, max_retries=0, max_new_tokens=48)
    finally:
        torch.set_num_threads(threads)
    known = {"rewrite_empty", "rewrite_too_short", "rewrite_missing_span", "rewrite_near_copy", "llm_qa_unparsed",
             "llm_qa_empty", "llm_qa_bad_question", "llm_qa_long_answer", "llm_qa_ungrounded", "llm_qa_answer_is_title",
             "llm_qa_copied_question", "llm_qa_answer_in_question", "llm_qa_short"}
    for doc, aug in zip(docs, augs, strict=True):
        assert aug.coverage["coverage"] == 1.0 and any(q.source == "rules" for q in aug.qa)
        assert len(aug.rewrites) == 1
        assert all(f.split(":")[0] in known for f in aug.failures)
        for q in aug.qa:
            if q.source == "llm":  # whatever the small model got right is grounded
                assert re.search(re.escape(normalize(q.answer)), normalize(doc.full_text))
