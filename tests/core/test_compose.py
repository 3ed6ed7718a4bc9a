"""compose / compose_batch against the explicit per-layer updates dW = s * B @ A."""

from __future__ import annotations

import pytest
import torch

from hyperprag.core.compose import compose, compose_batch
from hyperprag.core.lora import LoraSpec, LoraWeights, apply_lora

SPEC = LoraSpec(rank=2, alpha=32)
SHAPES = {"gate_proj": (3, 8, 12), "up_proj": (3, 8, 12), "down_proj": (3, 12, 8)}  # (L, in, out)


def rand(seed: int, rank: int = 2) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    return LoraWeights({m: torch.randn(n, rank, i, generator=g, dtype=torch.float64) for m, (n, i, o) in SHAPES.items()},
                       {m: torch.randn(n, o, rank, generator=g, dtype=torch.float64) for m, (n, i, o) in SHAPES.items()},
                       {"doc_id": f"d{seed}"})


def deltas(w: LoraWeights) -> dict[str, list[torch.Tensor]]:
    """Materialized updates per module type and layer: [out, in] each."""
    return {m: [w.delta(m, pos, SPEC.scale) for pos in range(SHAPES[m][0])] for m in SHAPES}


def assert_delta(w: LoraWeights, expected) -> None:
    got = deltas(w)
    for m in SHAPES:
        for pos in range(SHAPES[m][0]):
            torch.testing.assert_close(got[m][pos], expected(m, pos), atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_rules_match_explicit_delta(k):
    ws = [rand(s) for s in range(k)]
    per = [deltas(w) for w in ws]
    s = SPEC.scale

    def sum_delta(m, pos):
        return sum(p[m][pos] for p in per)

    def param_sum(m, pos):
        return s * sum(w.B[m][pos] for w in ws) @ sum(w.A[m][pos] for w in ws)

    cat = compose(ws, "cat")
    assert cat.rank == 2 * k and cat.meta["doc_ids"] == [f"d{i}" for i in range(k)]
    assert_delta(cat, sum_delta)
    assert_delta(compose(ws, "cat-mean"), lambda m, pos: sum_delta(m, pos) / k)
    summed = compose(ws, "sum")
    assert summed.rank == 2
    assert_delta(summed, param_sum)
    assert_delta(compose(ws, "mean"), lambda m, pos: param_sum(m, pos) / k**2)
    if k > 1:  # cross terms make "sum" differ from the sum of updates
        assert (deltas(summed)["gate_proj"][0] - sum_delta("gate_proj", 0)).abs().max() > 1e-2


def test_cat_allows_mixed_ranks_sum_does_not():
    ws = [rand(0, rank=2), rand(1, rank=3)]
    cat = compose(ws, "cat")
    assert cat.rank == 5
    assert_delta(cat, lambda m, pos: ws[0].delta(m, pos, SPEC.scale) + ws[1].delta(m, pos, SPEC.scale))
    with pytest.raises(ValueError, match="equal ranks"):
        compose(ws, "sum")


def test_errors():
    with pytest.raises(ValueError, match="at least one"):
        compose([])
    with pytest.raises(ValueError, match="unknown compose rule"):
        compose([rand(0)], "max")
    bad = rand(1)
    bad.A["gate_proj"] = bad.A["gate_proj"][:2]
    with pytest.raises(ValueError, match="gate_proj"):
        compose([rand(0), bad])


@pytest.mark.parametrize("rule", ["cat", "sum", "mean", "cat-mean"])
def test_compose_batch_pads_without_changing_delta(rule):
    groups = [[rand(0), rand(1), rand(2)], [rand(3)], [], [rand(4), rand(5)]]
    batch = compose_batch(groups, rule)
    assert batch.batched and batch.A["up_proj"].shape[:2] == (4, 3)
    want_rank = 6 if rule.startswith("cat") else 2
    assert batch.rank == want_rank
    for q, group in enumerate(groups):
        row = batch.select(q)
        if not group:
            assert_delta(row, lambda m, pos: torch.zeros(SHAPES[m][2], SHAPES[m][1], dtype=torch.float64))
            continue
        single = compose(group, rule)
        assert_delta(row, lambda m, pos, single=single: single.delta(m, pos, SPEC.scale))


def test_cat_in_model_equals_summed_weights(tiny_llama):
    """Hooks with the concatenated adapter == a model whose W has every document's update added."""
    import copy

    from hyperprag.core.lora import target_shapes

    spec = LoraSpec()
    g = torch.Generator().manual_seed(0)
    ws = [LoraWeights({m: torch.randn(n, 2, i, generator=g) * 0.05 for m, (n, i, o) in target_shapes(tiny_llama, spec).items()},
                      {m: torch.randn(n, o, 2, generator=g) * 0.05 for m, (n, i, o) in target_shapes(tiny_llama, spec).items()})
          for _ in range(3)]
    ids = torch.randint(4, 260, (2, 10), generator=g)
    merged = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        for pos, layer in enumerate(merged.model.layers):
            for m in spec.target_modules:
                lin = getattr(layer.mlp, m)
                lin.weight += sum(w.delta(m, pos, spec.scale) for w in ws)
        want = merged(ids).logits
        with apply_lora(tiny_llama, spec, compose(ws, "cat")):
            got = tiny_llama(ids).logits
        with apply_lora(tiny_llama, spec, compose_batch([ws, ws], "cat")):
            got_batch = tiny_llama(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_batch, want, atol=1e-5, rtol=0)
