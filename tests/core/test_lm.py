"""The LM head on target positions: the same numbers as the model's own forward, for either padding side;
a chat prefix shared by the rows of one adapter, computed once, gives the full pass's numbers."""

from __future__ import annotations

import pytest
import torch

from hyperprag.core.lm import (
    IGNORE,
    _decoder_pass,
    common_prefix_length,
    decoder_hidden,
    length_buckets,
    per_row_nll,
    target_logits,
)
from hyperprag.core.lora import LoraSpec, LoraWeights, init_lora, target_shapes


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
def test_target_logits_equal_the_forward_and_ignore_padding(model_name, request):
    model = request.getfixturevalue(model_name)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(4, 260, (n,), generator=g).tolist() for n in (9, 6)]
    answer = 3  # the last 3 tokens of each sequence are targets
    width = max(map(len, seqs))
    right = torch.zeros(2, width, dtype=torch.long)
    left, mask = right.clone(), right.clone()
    right_labels, left_labels = torch.full_like(right, IGNORE), torch.full_like(right, IGNORE)
    for i, s in enumerate(seqs):
        right[i, :len(s)] = torch.tensor(s)
        right_labels[i, len(s) - answer:len(s)] = torch.tensor(s[-answer:])
        left[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
        left_labels[i, width - answer:] = torch.tensor(s[-answer:])
    with torch.no_grad():
        by_right, targets, rows = target_logits(model, right, right_labels)  # no mask: right-padded
        by_left, left_targets, left_rows = target_logits(model, left, left_labels, mask)
        full = [model(input_ids=torch.tensor([s])).logits[0, -answer - 1:-1] for s in seqs]
    torch.testing.assert_close(by_right, torch.cat(full), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(by_left, by_right, atol=1e-4, rtol=1e-4)
    assert targets.tolist() == left_targets.tolist() == seqs[0][-answer:] + seqs[1][-answer:]
    assert rows.tolist() == left_rows.tolist() == [0] * answer + [1] * answer


def test_per_row_nll_is_the_mean_of_each_rows_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75], [1.0, 1e-30]]))
    nll = per_row_nll(logits, torch.tensor([0, 1, 0]), torch.tensor([0, 0, 2]), 3)
    assert nll[0].item() == pytest.approx((0.6931472 + 0.2876821) / 2, abs=1e-6)
    assert torch.isnan(nll[1]) and nll[2].item() == pytest.approx(0.0, abs=1e-6)


def _chat_batch(tok):
    from hyperprag.core.prompts import answer_completion, answer_prompt

    pairs = [("Where is it?", "Tesmar"), ("Who built the bridge?", "Ilsa Brandt of Kell"), ("Colour?", "blue")]
    texts = [answer_prompt(tok, q) + answer_completion(a) for q, a in pairs * 2]
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False, padding_side="right")


def test_common_prefix_length():
    ids = torch.tensor([[5, 6, 7, 8, 0], [5, 6, 7, 9, 9], [5, 6, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert common_prefix_length(ids, mask) == 2
    assert common_prefix_length(ids[:2], mask[:2]) == 3  # and each row keeps a token of its own
    assert common_prefix_length(ids[:1].repeat(2, 1), mask[:1].repeat(2, 1)) == 3
    assert common_prefix_length(ids, mask.flip(-1)) == 0  # left padding: nothing shared from position 0


def _random_adapters(model, spec: LoraSpec, batch: int) -> LoraWeights:
    weights = init_lora(target_shapes(model, spec), spec, batch=batch, dtype=torch.float64)
    for b in weights.B.values():
        b.normal_(0, 0.3)
    return weights


def _hidden_and_grads(model, enc, weights: LoraWeights, forward) -> tuple[torch.Tensor, torch.Tensor]:
    """`forward(fresh leaf copy of weights)` -> hidden [b, t, h]: its real-token states and the adapters'
    gradients of a loss the final norm does not flatten."""
    w = LoraWeights({m: a.clone().requires_grad_(True) for m, a in weights.A.items()},
                    {m: b.clone().requires_grad_(True) for m, b in weights.B.items()})
    real = enc["attention_mask"].bool()
    project = torch.randn(*real.shape, model.config.hidden_size, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0))
    hidden = forward(w)
    (hidden * project)[real].sum().backward()
    return hidden.detach()[real], torch.cat([g.grad.flatten() for g in [*w.A.values(), *w.B.values()]])


def _assert_same(reference: tuple[torch.Tensor, torch.Tensor], other: tuple[torch.Tensor, torch.Tensor]) -> None:
    (h0, g0), (h1, g1) = reference, other
    torch.testing.assert_close(h1, h0, atol=1e-12, rtol=1e-10)
    assert g0.abs().max() > 1.0
    torch.testing.assert_close(g1, g0, atol=1e-9 * float(g0.abs().max()), rtol=0)


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
def test_shared_prefix_equals_the_full_pass_with_gradients(model_name, request, tiny_tokenizer, float64_norms):
    """Per-document adapters, several questions each: the chat prefix computed once per document and reused
    through the KV cache gives the full pass's hidden states and the same gradients for the adapters
    (float64, so that anything but rounding would show)."""
    import copy

    model = copy.deepcopy(request.getfixturevalue(model_name)).double()
    spec = LoraSpec(rank=3)
    enc = _chat_batch(tiny_tokenizer)
    assert common_prefix_length(enc["input_ids"], enc["attention_mask"]) > 20
    groups = torch.tensor([0, 2, 1, 0, 2, 2])
    weights = _random_adapters(model, spec, batch=3)
    ids, am = enc["input_ids"], enc["attention_mask"]
    _assert_same(_hidden_and_grads(model, enc, weights, lambda w: decoder_hidden(model, ids, am, (spec, w.select(groups)))),
                 _hidden_and_grads(model, enc, weights, lambda w: decoder_hidden(model, ids, am, (spec, w), groups)))
    real = am.bool()
    with torch.no_grad():  # no adapter: one group for the whole batch
        plain = decoder_hidden(model, enc["input_ids"], enc["attention_mask"])
        ref = model.get_decoder()(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    torch.testing.assert_close(plain[real], ref[real], atol=1e-12, rtol=1e-10)


def test_length_buckets_minimize_padded_tokens_plus_calls():
    import itertools

    lengths = [40, 180, 35, 170, 42, 175]
    assert length_buckets(lengths, overhead=64) == [[0, 2, 4], [1, 3, 5]]
    assert length_buckets(lengths, overhead=10_000) == [[0, 1, 2, 3, 4, 5]]  # calls dearer than any padding
    assert length_buckets([7, 7, 7], overhead=0) == [[0, 1, 2]]  # equal widths: splitting saves nothing

    def cost(parts):
        return sum(len(p) * max(lengths[i] for i in p) + 5 for p in parts)

    best = min(cost([[i for i in range(6) if labels[i] == k] for k in set(labels)])
               for labels in itertools.product(range(6), repeat=6))
    assert cost(length_buckets(lengths, overhead=5)) == best  # no partition of the rows does better


@pytest.mark.parametrize("grouped", [True, False])
def test_length_buckets_give_the_single_pass_numbers_and_gradients(tiny_llama, tiny_tokenizer, float64_norms,
                                                                   grouped):
    """Closed-book questions beside ones with a long passage in the prompt: the bucketed decoder gives the
    one-pass hidden states at every real token and the same adapter gradients, per document or per row."""
    import copy

    from hyperprag.core.prompts import answer_completion, answer_prompt

    model = copy.deepcopy(tiny_llama).double()
    tok, spec = tiny_tokenizer, LoraSpec(rank=2)
    passage = ("Tesmar", "Tesmar is a harbour town on the Kell coast, founded by Ilsa Brandt. " * 6)
    texts = [answer_prompt(tok, q, [passage] if long else []) + answer_completion(a)
             for q, a, long in [("Where is it?", "Tesmar", False), ("Who built it?", "Ilsa Brandt", True),
                                ("Colour?", "blue", False), ("Who founded Tesmar?", "Ilsa Brandt", True)]]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False, padding_side="right")
    lengths = enc["attention_mask"].sum(-1).tolist()
    assert len(length_buckets(lengths)) == 2 and max(lengths) > 2 * min(lengths)
    groups = torch.tensor([0, 1, 1, 0]) if grouped else None
    weights = _random_adapters(model, spec, batch=2 if grouped else 4)
    ids, am = enc["input_ids"], enc["attention_mask"]
    _assert_same(_hidden_and_grads(model, enc, weights, lambda w: _decoder_pass(model, ids, am, (spec, w), groups)),
                 _hidden_and_grads(model, enc, weights, lambda w: decoder_hidden(model, ids, am, (spec, w), groups)))
