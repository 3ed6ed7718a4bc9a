"""HyperLoRA / DyPRAG baseline: output shapes for any architecture, PEFT equivalence, init and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel

from hypernet.config import HyperNetConfig
from hypernet.model import DyPRAGBaseline, HyperLoRA, build_hypernet, count_parameters, parameter_table
from hyperprag.core.lora import LoraSpec, apply_lora, target_shapes
from hyperprag.core.peft_io import export_peft

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(arch="hyperlora", **kw) -> HyperNetConfig:
    return HyperNetConfig(arch=arch, emb_dim=16, hidden=32, basis=8, **kw)


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("arch", ["hyperlora", "dyprag"])
@pytest.mark.parametrize("layers", [None, (1,)])
def test_output_shapes_follow_the_architecture(model_name, arch, layers, request):
    model = request.getfixturevalue(model_name)
    spec = LoraSpec(rank=3, layers=layers)
    shapes = target_shapes(model.config, spec)  # from the config alone
    net = build_hypernet(_config(arch), shapes, spec)
    out = net(torch.randn(5, 16))
    assert out.batched and set(out.A) == set(spec.target_modules)
    for m, (n_layers, d_in, d_out) in shapes.items():
        assert out.A[m].shape == (5, n_layers, 3, d_in) and out.B[m].shape == (5, n_layers, d_out, 3)
    single = net(torch.randn(16))
    assert not single.batched and single.A["down_proj"].shape == (len(layers or (0, 1)), 3, 128)
    ids = torch.randint(4, 260, (5, 7))
    with torch.no_grad(), apply_lora(model, spec, out.detach()):  # the output plugs into the model as is
        assert model(ids).logits.shape == (5, 7, 260)


def test_gemma3_config_shapes_without_weights():
    from transformers import Gemma3TextConfig

    cfg = Gemma3TextConfig(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
                           num_key_value_heads=1, head_dim=256, vocab_size=1000)
    shapes = target_shapes(cfg, LoraSpec())
    assert shapes == {"gate_proj": (18, 640, 2048), "up_proj": (18, 640, 2048), "down_proj": (18, 2048, 640)}
    with torch.device("meta"):
        net = HyperLoRA(HyperNetConfig(emb_dim=384), shapes, LoraSpec())
    assert count_parameters(net) < 3_000_000


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
def test_generated_adapter_matches_peft(model_name, request, tmp_path):
    model = request.getfixturevalue(model_name)
    spec = LoraSpec()
    net = HyperLoRA(_config(b_init=50.0), target_shapes(model, spec), spec)
    with torch.no_grad():
        weights = net(torch.randn(16))
    ids = torch.randint(4, 260, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), apply_lora(model, spec, weights):
        ours = model(ids).logits
    with torch.no_grad():
        base = model(ids).logits
    assert (ours - base).abs().max() > 1e-3
    folder = export_peft(weights, spec, tmp_path / "a", model, "tiny")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(folder)).eval()
    with torch.no_grad():
        theirs = peft_model(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch,init", [("hyperlora", "paper"), ("dyprag", "scaled")])
def test_first_deltas_are_small_but_every_parameter_gets_gradient(arch, init, tiny_llama):
    spec = LoraSpec()
    shapes = target_shapes(tiny_llama, spec)
    torch.manual_seed(0)
    net = build_hypernet(_config(arch, dyprag_init=init), shapes, spec)
    emb = torch.randn(4, 16)
    out = net(emb)
    for m, mods in [(m, dict((i, mod) for i, mod in enumerate(
            [tiny_llama.model.layers[j].mlp.get_submodule(m) for j in range(2)]))) for m in spec.target_modules]:
        for pos, mod in mods.items():
            dw = out.delta(m, pos, spec.scale)  # [4, out, in]
            rel = dw.norm(dim=(-2, -1)) / mod.weight.norm()
            assert 0 < rel.max() < 3e-2, (m, pos, rel)  # tiny random W: entries ~0.02
        a_rms = out.A[m].pow(2).mean().sqrt()
        assert 0.2 / (3 * shapes[m][1]) ** 0.5 < a_rms < 5 / (3 * shapes[m][1]) ** 0.5  # PEFT-like A scale
    # a loss that needs the update to grow: every parameter receives a nonzero gradient
    target = torch.randn(4, 2, 128, 128)
    loss = sum(((out.B[m] @ out.A[m]) - target[..., : shapes[m][2], : shapes[m][1]]).pow(2).mean()
               for m in spec.target_modules)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_dyprag_paper_init_starts_from_zero_adapters(tiny_llama):
    """Their N(0, 1e-7) init: both A and B (not just the update) start at ~0."""
    spec = LoraSpec()
    net = DyPRAGBaseline(_config("dyprag"), target_shapes(tiny_llama, spec), spec)
    out = net(torch.randn(2, 16))
    assert out.B["up_proj"].abs().max() < 1e-9 and out.A["up_proj"].abs().max() < 1e-9


def test_parameter_counts_at_reference_sizes():
    rows = {(r["base"], r["arch"], r["emb_dim"]): r["params"] for r in parameter_table()}
    # DyPRAG's translator at Llama-3.2-1B with their 2048-d LLM embedding is ~38M parameters
    assert 37_000_000 < rows[("Llama-3.2-1B", "dyprag", 2048)] < 39_000_000
    assert rows[("Llama-3.2-1B", "hyperlora", 2048)] < rows[("Llama-3.2-1B", "dyprag", 2048)] / 5
    assert rows[("SmolLM2-135M", "hyperlora", 384)] < rows[("SmolLM2-135M", "dyprag", 576)] / 5
