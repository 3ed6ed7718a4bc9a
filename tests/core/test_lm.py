"""The LM head on target positions: the same numbers as the model's own forward, for either padding side."""

from __future__ import annotations

import pytest
import torch

from hyperprag.core.lm import IGNORE, per_row_nll, target_logits


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
