"""Answering modes pick the right passages and adapters; evaluation resumes to the same metrics."""

import json

import pytest
import torch

from hyperprag.core.compose import compose
from hyperprag.core.data import Document, Passage, Question
from hyperprag.core.errors import InputError
from hyperprag.core.lora import LoraSpec, LoraWeights, target_shapes
from hyperprag.core.prompts import answer_prompt
from hyperprag.core.store import AdapterStore
from inference.answer import MODES, Retrieval, make_answerer
from inference.evaluate import evaluate, saved_metrics
from inference.generate import generate

SPEC = LoraSpec(rank=2, alpha=32)
DOCS = [Document(f"d{i}", f"Title {i}", f"Document {i} says the answer is word{i}.") for i in range(4)]


def adapter(model, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = target_shapes(model, SPEC)
    return LoraWeights({m: torch.randn(L, 2, i, generator=g) * 0.05 for m, (L, i, o) in shapes.items()},
                       {m: torch.randn(L, o, 2, generator=g) * 0.05 for m, (L, i, o) in shapes.items()})


class FixedRetriever:
    """Question i retrieves documents i and i+1 (mod 4)."""

    def search(self, queries, k):
        return [[(f"d{(int(q.split()[-1]) + j) % 4}", 1.0) for j in range(k)] for q in queries]


def questions(n=6):
    return [Question(f"q{i}", f"What does document say {i % 4}", [f"word{i % 4}"], "toy", "t" + str(i % 2),
                     [Passage(DOCS[i % 4].title, DOCS[i % 4].text, True)]) for i in range(n)]


@pytest.fixture
def answerer(tiny_llama, tiny_tokenizer, tmp_path):
    store = AdapterStore.create(tmp_path / "store", "tiny", SPEC)
    for i, d in enumerate(DOCS):
        store.put(d.id, adapter(tiny_llama, i))
    store.flush()
    return make_answerer(tiny_llama, tiny_tokenizer, DOCS, retriever=FixedRetriever(), teacher=store, hyper=store,
                         top_k=2, max_new_tokens=6, batch_size=4)


def test_modes_build_the_documented_prompts_and_adapters(answerer, tiny_tokenizer):
    qs = questions(2)
    for mode in MODES:
        prompts, adapters, doc_ids, _ = answerer.prompts_and_adapters(qs, mode)
        if mode == "vanilla":
            assert prompts[1] == answer_prompt(tiny_tokenizer, qs[1].question) and adapters == [None, None]
            continue
        assert doc_ids[1] == ["d1", "d2"]
        has_passages = "Passage 1: Title 1" in prompts[1]
        assert has_passages == (mode in {"rag", "prag-combine", "hyper-combine"})
        if mode == "rag":
            assert adapters == [None, None]
        else:
            store = answerer.teacher.store  # a store is read through a StoreSource (inference/sources.py)
            want = compose([store.get("d1"), store.get("d2")], "cat")
            for m in want.A:
                assert torch.equal(adapters[1].A[m], want.A[m]) and torch.equal(adapters[1].B[m], want.B[m])


def test_gold_retrieval_uses_the_questions_own_passages():
    gold = Retrieval({d.id: d for d in DOCS}, top_k=1, gold=True)  # matched by content, whatever the ids
    assert gold.documents_for(questions(3)) == [["d0"], ["d1"], ["d2"]]
    assert gold.supporting(questions(3)[2]) == ["d2"]


def test_prag_answers_equal_generation_with_the_composed_adapter(answerer, tiny_llama, tiny_tokenizer):
    qs = questions(3)
    preds = answerer.answer(qs, "prag")
    prompts, adapters, _, spec = answerer.prompts_and_adapters(qs, "prag")
    for p, prompt, a in zip(preds, prompts, adapters, strict=True):
        assert p.raw == generate(tiny_llama, tiny_tokenizer, [prompt], a, spec, max_new_tokens=6)[0]


def test_missing_adapter_source_is_a_clear_error_before_any_answer(answerer, tmp_path):
    answerer.teacher = None
    with pytest.raises(InputError, match="teacher adapter store"):
        answerer.answer(questions(1), "prag")
    with pytest.raises(InputError, match="mode 'prag' needs a teacher adapter store"):
        evaluate(answerer, questions(2), ["vanilla", "prag"], tmp_path / "ev", progress=False)
    assert not (tmp_path / "ev" / "predictions" / "vanilla.jsonl").exists()  # refused before vanilla ran


def test_evaluate_resumes_after_a_kill_with_equal_metrics(answerer, tmp_path):
    qs = questions(6)
    full = evaluate(answerer, qs, ["vanilla", "prag"], tmp_path / "full", batch_size=2, with_nll=True,
                    progress=False)
    # a run killed mid-way: 3 finished records and a torn fourth line
    part = tmp_path / "part" / "predictions"
    part.mkdir(parents=True)
    lines = (tmp_path / "full" / "predictions" / "vanilla.jsonl").read_text().splitlines()
    (part / "vanilla.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])
    resumed = evaluate(answerer, qs, ["vanilla", "prag"], tmp_path / "part", batch_size=2, with_nll=True,
                       progress=False)
    recs = [json.loads(x) for x in (part / "vanilla.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == sorted(q.id for q in qs)  # each question exactly once
    for mode in full:
        for group in full[mode]:
            for key in ("em", "f1", "contains", "answer_nll", "n"):
                assert resumed[mode][group][key] == pytest.approx(full[mode][group][key])
    assert set(full["vanilla"]) == {"all", "toy", "toy/t0", "toy/t1"}
    assert (tmp_path / "part" / "metrics.md").read_text().count("| vanilla |") == 4


def test_evaluate_measures_answer_loss_only_in_the_modes_asked(answerer, tmp_path):
    qs = questions(3)
    every = evaluate(answerer, qs, ["vanilla", "prag"], tmp_path / "every", batch_size=3, with_nll=True,
                     progress=False)
    some = evaluate(answerer, qs, ["vanilla", "prag"], tmp_path / "some", batch_size=3, with_nll=["prag"],
                    progress=False)
    assert "answer_nll" not in some["vanilla"]["all"]
    assert some["prag"]["all"]["answer_nll"] == pytest.approx(every["prag"]["all"]["answer_nll"], abs=1e-6)
    assert some["vanilla"]["all"]["em"] == every["vanilla"]["all"]["em"]


def test_saved_metrics_restrict_every_mode_to_a_subset_one_mode_answered(answerer, tmp_path):
    """prag answers 3 of 6 questions (subsets); vanilla's saved predictions read back on those 3 equal a run of
    vanilla on the 3 alone, and on all 6 equal the run's own metrics."""
    qs = questions(6)
    some = [qs[0], qs[3], qs[4]]
    full = evaluate(answerer, qs, ["vanilla", "prag"], tmp_path / "full", batch_size=2, with_nll=True,
                    progress=False, subsets={"prag": some})
    alone = evaluate(answerer, some, ["vanilla"], tmp_path / "alone", batch_size=2, with_nll=True, progress=False)
    assert full["prag"]["all"]["n"] == 3 and full["vanilla"]["all"]["n"] == 6
    on_some = saved_metrics(tmp_path / "full", "vanilla", some)
    assert on_some["all"]["n"] == 3
    for key in ("em", "f1", "answer_nll"):
        assert on_some["all"][key] == pytest.approx(alone["vanilla"]["all"][key], abs=1e-6)
        assert saved_metrics(tmp_path / "full", "vanilla", qs)["all"][key] == pytest.approx(full["vanilla"]["all"][key])


def test_evaluate_reports_recall_of_the_supporting_passages(answerer, tmp_path):
    """Question i's supporting passage is document i % 4 and it retrieves i % 4 and i % 4 + 1: recall@2 = 1;
    at top-1 a question whose passage is not retrieved first would score 0. Vanilla retrieves nothing."""
    qs = questions(4)
    qs[1].passages.append(Passage(DOCS[3].title, DOCS[3].text, True))  # q1: d1 (retrieved) and d3 (not)
    qs[2].passages.append(Passage(DOCS[0].title, DOCS[0].text, False))  # not supporting: ignored
    metrics = evaluate(answerer, qs, ["vanilla", "rag"], tmp_path, batch_size=4, progress=False)
    assert "recall" not in metrics["vanilla"]["all"]
    assert metrics["rag"]["all"]["recall"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    header = (tmp_path / "metrics.md").read_text().splitlines()[2]
    assert header.startswith("| mode |") and "| recall |" in header


def mc_questions(n=3):
    opts = {"A": "word0", "B": "a much longer option text", "C": "word2"}
    return [Question(f"m{i}", f"What does document say {i % 4}", [["A", "B", "C"][i % 3], opts[["A", "B", "C"][i % 3]]],
                     "toy-mc", None, [], options=dict(opts)) for i in range(n)]


def test_likelihood_scoring_picks_the_option_of_lowest_nll_per_token(answerer, tiny_llama, tiny_tokenizer):
    """Each option's NLL equals answer_nll of its completion with the question's own composed adapter (the
    shared-prompt batch changes no number), the likeliest option's letter is the prediction, and questions
    without options in the same batch are generated as before."""
    from hyperprag.core.prompts import answer_completion
    from inference.generate import answer_nll

    answerer.mcq_scoring = "likelihood"
    qs = mc_questions(3) + questions(1)
    preds = answerer.answer(qs, "prag")
    prompts, adapters, _, spec = answerer.prompts_and_adapters(qs, "prag")
    for q, p, prompt, a in zip(qs[:3], preds[:3], prompts[:3], adapters[:3], strict=True):
        completions = [answer_completion(t) for t in q.options.values()]
        want = answer_nll(tiny_llama, tiny_tokenizer, [prompt] * 3, completions, [a] * 3, spec)
        got = p.extra["option_nll"]
        assert list(got) == ["A", "B", "C"]
        assert list(got.values()) == pytest.approx(want, abs=1e-4)
        assert p.prediction == min(got, key=got.get)
    last = preds[3]
    assert not last.extra and last.raw == generate(tiny_llama, tiny_tokenizer, [prompts[3]], adapters[3], spec,
                                                   max_new_tokens=6)[0]


def test_likelihood_scoring_is_scored_as_accuracy(answerer, tmp_path):
    answerer.mcq_scoring = "likelihood"
    qs = mc_questions(3)
    metrics = evaluate(answerer, qs, ["vanilla"], tmp_path / "ev", progress=False)
    recs = [json.loads(line) for line in (tmp_path / "ev" / "predictions" / "vanilla.jsonl").read_text().splitlines()]
    expected = sum(r["prediction"] == q.answers[0] for r, q in zip(recs, qs, strict=True)) / 3
    assert metrics["vanilla"]["all"]["acc"] == pytest.approx(expected)
    assert all(set(r["extra"]["option_nll"]) == {"A", "B", "C"} for r in recs)


def test_unknown_mcq_scoring_is_a_clear_error(tiny_llama, tiny_tokenizer):
    with pytest.raises(ValueError, match="mcq_scoring 'vote'"):
        make_answerer(tiny_llama, tiny_tokenizer, DOCS, retriever="none", mcq_scoring="vote")


def test_calibrated_scoring_subtracts_the_content_free_prior(answerer, tiny_llama, tiny_tokenizer):
    """calibrated = each option's NLL minus its NLL after the content-free question with the same options
    (no passages, no adapter); the prediction is the lowest difference, which can differ from likelihood's."""
    from hyperprag.core.prompts import answer_completion
    from inference.answer import CONTENT_FREE
    from inference.generate import option_nll

    answerer.mcq_scoring = "calibrated"
    qs = mc_questions(3)
    preds = answerer.answer(qs, "prag")
    for q, p in zip(qs, preds, strict=True):
        completions = [answer_completion(t) for t in q.options.values()]
        prior = option_nll(tiny_llama, tiny_tokenizer, answer_prompt(tiny_tokenizer, CONTENT_FREE, [], q.options),
                           completions)
        assert list(p.extra["option_prior_nll"].values()) == pytest.approx(prior, abs=1e-5)
        diff = {k: v - p.extra["option_prior_nll"][k] for k, v in p.extra["option_nll"].items()}
        assert p.prediction == min(diff, key=diff.get)
