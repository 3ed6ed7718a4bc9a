"""The real embedded SmolLM2, end to end: loading, rag answering through the CLI, injection by a LoRA."""

import json

import pytest
import torch

from hyperprag.core.data import Document
from hyperprag.core.lora import LoraSpec, init_lora, target_shapes
from hyperprag.core.models import EMBEDDED, ModelLoadError, load_base_model
from hyperprag.core.prompts import answer_completion, answer_prompt
from hyperprag.demo import demo_dir
from inference.answer import make_answerer
from inference.generate import answer_nll

pytestmark = pytest.mark.slow

PASSAGE = Document("drell", "Drellwick", "Drellwick is a market town in the Haskery Valley. The town is known for "
                   "a sharp blue cheese. A bronze statue of a goat stands in its main square.")


@pytest.fixture(scope="module")
def smollm2():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_base_model("smollm2-135m")


def test_rag_answers_from_the_passage_and_vanilla_cannot(smollm2):
    from hyperprag.core.data import load_corpus, load_questions
    from hyperprag.core.metrics import contains_answer

    model, tok = smollm2
    docs = {d.id: d for d in load_corpus(demo_dir() / "unseen" / "corpus.jsonl")}
    qs = list(load_questions(demo_dir() / "unseen" / "questions.jsonl"))[:6]
    answerer = make_answerer(model, tok, docs, retriever="gold", top_k=1, max_new_tokens=24, batch_size=6)
    rag = answerer.answer(qs, "rag")
    vanilla = answerer.answer(qs, "vanilla")
    rag_hits = sum(contains_answer(p.prediction, q.answers) for p, q in zip(rag, qs, strict=True))
    vanilla_hits = sum(contains_answer(p.prediction, q.answers) for p, q in zip(vanilla, qs, strict=True))
    assert rag_hits >= 4 and vanilla_hits <= 1, (rag_hits, vanilla_hits)
    assert all(r.prompt_tokens > v.prompt_tokens for r, v in zip(rag, vanilla, strict=True))


def test_cli_eval_rag_beats_vanilla_on_demo_questions(tmp_path):
    from hyperprag.cli import main

    questions = demo_dir() / "unseen" / "questions.jsonl"
    metrics = main(["eval", str(questions), "--modes", "[vanilla,rag]", "--retriever", "gold", "--limit", "8",
                    "--out", str(tmp_path), "--batch_size", "8", "--max_new_tokens", "12"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["rag"]["all"]["contains"] > saved["vanilla"]["all"]["contains"]
    assert saved["rag"]["all"]["n"] == 8


def test_a_few_adapter_steps_lower_the_gold_answer_loss(smollm2):
    """One document's facts, trained for a few steps, become likelier closed-book (the injection signal)."""
    model, tok = smollm2
    spec = LoraSpec()
    weights = init_lora(target_shapes(model, spec), spec, seed=0)
    params = [t.requires_grad_(True) for t in [*weights.A.values(), *weights.B.values()]]
    prompt = answer_prompt(tok, "Which animal is the bronze statue in the main square of Drellwick?")
    completion = answer_completion("a goat")
    before = answer_nll(model, tok, [prompt], [completion], weights.detach(), spec)[0]
    enc = tok(prompt + completion, return_tensors="pt", add_special_tokens=False)
    n_answer = len(tok(completion, add_special_tokens=False)["input_ids"])
    labels = enc["input_ids"].clone()
    labels[:, :-n_answer] = -100
    opt = torch.optim.AdamW(params, lr=1e-3)
    from hyperprag.core.lora import apply_lora

    for _ in range(8):
        with apply_lora(model, spec, weights):
            loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = answer_nll(model, tok, [prompt], [completion], weights.detach(), spec)[0]
    assert after < before - 0.5


def test_wrong_model_name_lists_the_embedded_models():
    with pytest.raises(ModelLoadError) as err:
        load_base_model("no-such-model-anywhere")
    for name in EMBEDDED:
        assert name in str(err.value)


def test_stopping_at_the_answer_keeps_every_answer(smollm2):
    """SmolLM2 mostly ends its one-sentence answers with EOS anyway; the stop must never change one."""
    from hyperprag.core.data import load_corpus, load_questions
    from hyperprag.core.metrics import extract_answer
    from inference.generate import generate

    model, tok = smollm2
    docs = {d.id: d for d in load_corpus(demo_dir() / "unseen" / "corpus.jsonl")}
    qs = list(load_questions(demo_dir() / "unseen" / "questions.jsonl"))[:8]
    prompts = [answer_prompt(tok, q.question) for q in qs[:4]]
    prompts += [answer_prompt(tok, q.question, [(docs[f"{q.id[:-3]}"].title, docs[f"{q.id[:-3]}"].text)])
                for q in qs[4:]]
    full = generate(model, tok, prompts, max_new_tokens=24, batch_size=8)
    short = generate(model, tok, prompts, max_new_tokens=24, batch_size=8, stop_at_answer=True)
    assert [extract_answer(t) for t in short] == [extract_answer(t) for t in full]
    n_full = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in full)
    n_short = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in short)
    assert n_short <= n_full
