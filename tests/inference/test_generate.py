"""Batched generation with a different adapter per prompt equals answering each prompt alone through PEFT."""

import copy

import pytest
import torch
from peft import PeftModel

from hyperprag.core.compose import compose
from hyperprag.core.lora import LoraSpec, LoraWeights, merged_lora, target_shapes
from hyperprag.core.peft_io import export_peft
from hyperprag.core.prompts import answer_prompt
from inference.generate import answer_nll, batch_adapters, generate

SPEC = LoraSpec(rank=2, alpha=32)


def random_adapter(model, seed: int, scale: float = 0.05) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    shapes = target_shapes(model, SPEC)
    A = {m: torch.randn(L, SPEC.rank, i, generator=g) * scale for m, (L, i, o) in shapes.items()}
    B = {m: torch.randn(L, o, SPEC.rank, generator=g) * scale for m, (L, i, o) in shapes.items()}
    return LoraWeights(A, B)


PROMPTS = ["Who built the bridge?", "What colour is the sky over Drellwick in May?", "Name it.",
           "Where was the festival held in the year after the flood?"]


@pytest.fixture(params=["tiny_llama", "tiny_gemma"])
def model(request):
    return request.getfixturevalue(request.param)


def test_per_prompt_adapters_match_peft_one_by_one(model, tiny_tokenizer, tmp_path):
    prompts = [answer_prompt(tiny_tokenizer, q) for q in PROMPTS]
    adapters = [random_adapter(model, s) for s in range(3)] + [None]
    # composed (rank-concatenated) adapters of different ranks per prompt, padded inside one batch
    adapters[2] = compose([adapters[0], adapters[1]], "cat")
    batched = generate(model, tiny_tokenizer, prompts, adapters, SPEC, max_new_tokens=8, batch_size=4)
    plain = generate(model, tiny_tokenizer, prompts, None, None, max_new_tokens=8, batch_size=4)
    assert batched[3] == plain[3] and batched[:3] != plain[:3]  # the adapters do change what is generated
    for prompt, adapter, got in zip(prompts, adapters, batched, strict=True):
        if adapter is None:
            ref_model = model
        else:
            folder = export_peft(adapter, SPEC, tmp_path / f"a{id(adapter)}", model, "tiny")
            ref_model = PeftModel.from_pretrained(copy.deepcopy(model), folder).eval()
        alone = generate(ref_model, tiny_tokenizer, [prompt], None, None, max_new_tokens=8, batch_size=1)
        assert alone[0] == got


def test_shared_adapter_merged_path_equals_hooks(tiny_llama, tiny_tokenizer):
    prompts = [answer_prompt(tiny_tokenizer, q) for q in PROMPTS]
    adapter = random_adapter(tiny_llama, 7)
    shared = generate(tiny_llama, tiny_tokenizer, prompts, adapter, SPEC, max_new_tokens=8, merge=True)
    per_prompt = generate(tiny_llama, tiny_tokenizer, prompts, [adapter, adapter, None, adapter], SPEC,
                          max_new_tokens=8)
    assert batch_adapters([adapter, adapter, None, adapter]).batched  # the mixed batch goes through hooks
    assert [shared[i] for i in (0, 1, 3)] == [per_prompt[i] for i in (0, 1, 3)]
    # the merged path restores the original weights exactly
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    with merged_lora(tiny_llama, SPEC, adapter):
        pass
    assert all(torch.equal(before[k], v) for k, v in tiny_llama.state_dict().items())


def test_answer_nll_batched_equals_single_and_drops_with_matching_adapter(tiny_llama, tiny_tokenizer):
    prompts = [answer_prompt(tiny_tokenizer, q) for q in PROMPTS]
    completions = [" Orvantis.", " blue.", " 1893.", " Kellin River."]
    adapters = [random_adapter(tiny_llama, s) for s in range(4)]
    batched = answer_nll(tiny_llama, tiny_tokenizer, prompts, completions, adapters, SPEC, batch_size=4)
    single = [answer_nll(tiny_llama, tiny_tokenizer, [p], [c], a, SPEC)[0]
              for p, c, a in zip(prompts, completions, adapters, strict=True)]
    assert batched == pytest.approx(single, abs=1e-5)
    assert all(x > 0 for x in batched)


def test_answer_nll_equals_full_logits_cross_entropy(tiny_llama, tiny_tokenizer):
    """The LM head on the completion tail only gives the loss of the whole, unpadded sequence's logits."""
    prompts = [answer_prompt(tiny_tokenizer, q) for q in PROMPTS]
    completions = [" Orvantis.", " a much longer answer than the others here.", " 1893.", " Kellin River."]
    got = answer_nll(tiny_llama, tiny_tokenizer, prompts, completions, batch_size=4)
    expected = []
    for p, c in zip(prompts, completions, strict=True):
        p_ids = tiny_tokenizer(p, add_special_tokens=False)["input_ids"]
        c_ids = tiny_tokenizer(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = tiny_llama(input_ids=torch.tensor([p_ids + c_ids])).logits[0]  # [t, V]
        pred = logits[len(p_ids) - 1:-1]  # the positions that predict the completion's tokens
        expected.append(float(torch.nn.functional.cross_entropy(pred.float(), torch.tensor(c_ids))))
    assert got == pytest.approx(expected, abs=1e-5)


def test_adapter_count_must_match_prompts(tiny_llama, tiny_tokenizer):
    with pytest.raises(ValueError, match="2 prompts but 1 adapters"):
        generate(tiny_llama, tiny_tokenizer, ["a", "b"], [random_adapter(tiny_llama, 0)], SPEC)
    with pytest.raises(ValueError, match="LoraSpec"):
        generate(tiny_llama, tiny_tokenizer, ["a"], random_adapter(tiny_llama, 0), None)


def test_one_gold_answer_loss_with_one_bos(tiny_gemma):
    """Gemma-3 style (the tokenizer adds a BOS, the prompt text carries it): the teacher's training loss on a
    closed-book QA sequence, answer_nll and the injection benchmark's gold loss are one computation over
    the same tokens, with one BOS. Tokenizing the prompt with special tokens (the benchmark's old way)
    doubles the BOS and changes the loss."""
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    from hyperprag.core.data import Document, Question
    from hyperprag.core.prompts import answer_completion
    from tests.conftest import make_bos_tokenizer
    from training.sequences import SequenceOptions, build_examples, collate
    from training.teacher import token_losses

    tok = make_bos_tokenizer()
    doc = Document("d", "Lake Vorn", "Lake Vorn is near Tesmar.")
    qa = [SimpleNamespace(question="Which town is near Lake Vorn?", answer="Tesmar", full_answer=None)]
    (example,), _ = build_examples(tok, doc, SimpleNamespace(qa=qa, rewrites=[]), SequenceOptions(kinds=("qa_closed",)))
    prompt = answer_prompt(tok, qa[0].question)
    assert example.input_ids.count(tok.bos_token_id) == 1 and tok(prompt)["input_ids"][:2] == [1, 1]
    with torch.no_grad():
        losses = token_losses(tiny_gemma, collate([example], tok.pad_token_id))[0]
    assert example.input_ids[-1] == tok.eos_token_id  # the teacher also trains the stop; answering scores the rest
    teacher = losses[:-1].mean().item()
    ours = answer_nll(tiny_gemma, tok, [prompt], [answer_completion("Tesmar")])[0]
    assert ours == pytest.approx(teacher, abs=1e-5)

    path = Path(__file__).parents[2] / "benchmarks" / "injection.py"
    spec = importlib.util.spec_from_file_location("injection_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    q = Question("q", qa[0].question, ["Tesmar"])
    assert bench.evaluate(tiny_gemma, tok, [q], [prompt], SPEC, None, 2)["gold_loss"] == pytest.approx(ours, abs=1e-6)
    doubled = tok(prompt + answer_completion("Tesmar"))["input_ids"]  # with special tokens: BOS twice
    with torch.no_grad():
        logits = tiny_gemma(input_ids=torch.tensor([doubled])).logits[0]
    n = len(tok(answer_completion("Tesmar"), add_special_tokens=False)["input_ids"])
    old = torch.nn.functional.cross_entropy(logits[-n - 1:-1], torch.tensor(doubled[-n:])).item()
    assert abs(old - ours) > 1e-5  # a random tiny model barely cares; Gemma-3 answered nonsense
