"""Loss functions: Gram-product delta-W loss equals the materialized one; normalization; logit selection."""

from __future__ import annotations

import pytest
import torch

from hypernet.config import HyperNetConfig
from hypernet.losses import (
    coord_loss,
    deltaw_cosine,
    deltaw_loss,
    kl_loss,
    select_logits,
    target_mask,
)
from hypernet.model import build_hypernet
from hyperprag.core.lora import LoraSpec, LoraWeights, apply_lora, init_lora, target_shapes

pytestmark = pytest.mark.usefixtures("one_thread")


SHAPES = {"gate_proj": (3, 12, 20), "up_proj": (3, 12, 20), "down_proj": (3, 20, 12)}


def _rand(seed, b=4, r=2, a_scale=0.3, b_scale=0.01) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    return LoraWeights({m: torch.randn(b, n, r, i, generator=g, dtype=torch.float64) * a_scale
                        for m, (n, i, o) in SHAPES.items()},
                       {m: torch.randn(b, n, o, r, generator=g, dtype=torch.float64) * b_scale
                        for m, (n, i, o) in SHAPES.items()})


def _materialized_deltaw_loss(s: LoraWeights, t: LoraWeights) -> torch.Tensor:
    terms = []
    for m in SHAPES:
        ds, dt = s.B[m] @ s.A[m], t.B[m] @ t.A[m]  # [b, L, out, in]
        err = (ds - dt).pow(2).sum(dim=(-3, -2, -1))
        terms.append((err / dt.pow(2).sum(dim=(-3, -2, -1))).mean())
    return torch.stack(terms).mean()


def test_deltaw_loss_equals_materialized():
    s, t = _rand(0), _rand(1)
    torch.testing.assert_close(deltaw_loss(s, t), _materialized_deltaw_loss(s, t), rtol=1e-5, atol=1e-5)
    # float32 inputs too (the loss upcasts nothing, so this is the training-time precision)
    s32, t32 = s.to(torch.float32), t.to(torch.float32)
    torch.testing.assert_close(deltaw_loss(s32, t32).double(), _materialized_deltaw_loss(s, t), rtol=1e-5, atol=1e-5)
    assert deltaw_loss(t32, t32) < 1e-5  # zero at the teacher
    # gauge invariance: B G, G^-1 A is the same update, so the same loss (the coordinate loss differs)
    g = torch.tensor([[2.0, 1.0], [0.5, 3.0]], dtype=torch.float64)
    s2 = LoraWeights({m: torch.linalg.inv(g) @ a for m, a in s.A.items()}, {m: b @ g for m, b in s.B.items()})
    torch.testing.assert_close(deltaw_loss(s2, t), deltaw_loss(s, t))
    assert not torch.allclose(coord_loss(s2, t), coord_loss(s, t))


def test_deltaw_cosine_equals_materialized():
    w = _rand(3)
    flat = torch.cat([(w.B[m] @ w.A[m]).flatten(1) for m in SHAPES], dim=1)  # [b, everything]
    flat = flat / flat.norm(dim=1, keepdim=True)
    torch.testing.assert_close(deltaw_cosine(w), flat @ flat.T, rtol=1e-6, atol=1e-6)


def test_coord_loss_is_scale_free_per_module():
    """A 10% error in the tiny B counts as much as a 10% error in A (raw MSE would ignore B entirely)."""
    t = _rand(4, b_scale=1e-3)
    s_a = LoraWeights({m: a * 1.1 for m, a in t.A.items()}, dict(t.B))
    s_b = LoraWeights(dict(t.A), {m: b * 1.1 for m, b in t.B.items()})
    torch.testing.assert_close(coord_loss(s_a, t), coord_loss(s_b, t))
    torch.testing.assert_close(coord_loss(s_a, t), torch.tensor(0.01 / 2, dtype=torch.float64))


@pytest.mark.parametrize("arch,loss_fn,drops", [("hyperlora", coord_loss, True), ("hyperlora", deltaw_loss, True),
                                                 ("dyprag", coord_loss, True), ("dyprag", deltaw_loss, False)])
def test_parameter_losses_decrease(arch, loss_fn, drops):
    """Fit 4 PRAG-like teachers (shared A init + noise, small B) from 4 embeddings: each loss clearly drops.

    Except DyPRAG's published N(0, 1e-7) init under any loss of the update B A alone (delta-W, KL, LM):
    the gradient of B is ~A ~ 1e-14, far under AdamW's eps, so it never leaves zero.
    """
    spec = LoraSpec()
    init = init_lora(SHAPES, spec, seed=0)
    g = torch.Generator().manual_seed(5)
    teacher = LoraWeights({m: a + 0.02 * torch.randn(4, *a.shape, generator=g) for m, a in init.A.items()},
                          {m: 1e-3 * torch.randn(4, *b.shape, generator=g) for m, b in init.B.items()})
    emb = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = build_hypernet(HyperNetConfig(arch=arch, emb_dim=16, hidden=32, basis=16), SHAPES, spec)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(80):
        loss = loss_fn(net(emb), teacher)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    if drops:
        assert losses[-1] < 0.3 * losses[0], losses
    else:
        assert losses[-1] > 0.99 * losses[0], losses


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
def test_select_logits_match_the_full_forward(model_name, request):
    model = request.getfixturevalue(model_name)
    spec = LoraSpec()
    w = _rand(6, b=2).to(torch.float32)
    shapes = target_shapes(model, spec)
    g = torch.Generator().manual_seed(0)
    w = LoraWeights({m: torch.randn(2, n, 2, i, generator=g) * 0.1 for m, (n, i, o) in shapes.items()},
                    {m: torch.randn(2, n, o, 2, generator=g) * 0.1 for m, (n, i, o) in shapes.items()})
    ids = torch.randint(4, 260, (2, 10), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, 6:] = ids[:, 6:]
    am = torch.ones_like(ids)
    sel = target_mask(labels, am, "answer")
    with torch.no_grad(), apply_lora(model, spec, w):
        full = model(ids).logits[:, :-1][sel].float()
    with torch.no_grad():
        ours = select_logits(model, spec, w, ids, am, sel)
    torch.testing.assert_close(ours, full, atol=1e-4, rtol=1e-4)
    # right padding of a shorter sequence does not change its logits
    ids2 = ids.clone()
    ids2[1, 8:] = 0
    am2 = am.clone()
    am2[1, 8:] = 0
    labels2 = labels.clone()
    labels2[1, 8:] = -100
    sel2 = target_mask(labels2, am2, "answer")
    with torch.no_grad():
        short = select_logits(model, spec, w, ids2, am2, sel2)
    torch.testing.assert_close(short[:4], ours[:4], atol=1e-4, rtol=1e-4)  # row 0 unchanged
    assert target_mask(labels2, am2, "all").sum() == 9 + 7


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    a = torch.randn(5, 11)
    assert kl_loss(a, a).abs() < 1e-6
    assert kl_loss(a, torch.randn(5, 11)) > 0

