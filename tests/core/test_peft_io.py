"""PEFT folders written by export_peft load in PEFT with exactly the logits of apply_lora."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from hyperprag.core.compose import compose
from hyperprag.core.lora import LoraSpec, LoraWeights, apply_lora, target_shapes
from hyperprag.core.peft_io import PeftFormatError, export_peft, import_peft


def random_lora(model_or_config, spec: LoraSpec, seed: int, rank: int | None = None) -> LoraWeights:
    """Non-zero A and B (init_lora has B = 0, which would make every comparison trivial)."""
    gen = torch.Generator().manual_seed(seed)
    r = rank or spec.rank
    A, B = {}, {}
    for m, (n_layers, d_in, d_out) in target_shapes(model_or_config, spec).items():
        A[m] = torch.randn(n_layers, r, d_in, generator=gen) * 0.1
        B[m] = torch.randn(n_layers, d_out, r, generator=gen) * 0.1
    return LoraWeights(A, B)


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(4, 260, (2, 12), generator=torch.Generator().manual_seed(seed))


def _logits_hooks(model, spec, weights) -> torch.Tensor:
    with torch.no_grad(), apply_lora(model, spec, weights):
        return model(_ids()).logits


def _logits_peft(model, folder) -> torch.Tensor:
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(folder)).eval()
    with torch.no_grad():
        return peft_model(_ids()).logits


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("layers", [None, (1,)])
def test_peft_logits_match_apply_lora(model_name, layers, request, tmp_path):
    model = request.getfixturevalue(model_name)
    spec = LoraSpec(rank=2, alpha=32, layers=layers)
    weights = random_lora(model, spec, seed=1)
    folder = export_peft(weights, spec, tmp_path / "adapter", model, "tiny/base")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and cfg["lora_alpha"] == 32 and cfg["base_model_name_or_path"] == "tiny/base"
    assert cfg["layers_to_transform"] == (None if layers is None else [1])
    state = load_file(str(folder / "adapter_model.safetensors"))
    layer = 0 if layers is None else 1
    a = state[f"base_model.model.model.layers.{layer}.mlp.gate_proj.lora_A.weight"]
    assert a.shape == (2, 64) and state[f"base_model.model.model.layers.{layer}.mlp.down_proj.lora_B.weight"].shape == (64, 2)
    assert len(state) == 2 * 3 * (2 if layers is None else 1)

    ours = _logits_hooks(model, spec, weights)
    with torch.no_grad():
        base = model(_ids()).logits
    assert (ours - base).abs().max() > 1e-3  # the adapter really changes the output
    torch.testing.assert_close(_logits_peft(model, folder), ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
def test_round_trip(model_name, request, tmp_path):
    model = request.getfixturevalue(model_name)
    spec = LoraSpec(rank=2, alpha=16)
    weights = random_lora(model, spec, seed=2)
    export_peft(weights, spec, tmp_path / "a", model.config, "tiny")  # from the config alone
    back, spec2 = import_peft(tmp_path / "a", model)
    assert spec2 == spec
    for m in spec.target_modules:
        assert torch.equal(back.A[m], weights.A[m]) and torch.equal(back.B[m], weights.B[m])
    # the same folder imports against just the config, too
    back2, _ = import_peft(tmp_path / "a", model.config)
    assert torch.equal(back2.B["down_proj"], weights.B["down_proj"])


def test_concatenated_rank_keeps_scale(tiny_llama, tmp_path):
    spec = LoraSpec(rank=2, alpha=32)
    parts = [random_lora(tiny_llama, spec, seed=s) for s in range(3)]
    cat = compose(parts, "cat")  # rank 6, applied with spec.scale = 16
    folder = export_peft(cat, spec, tmp_path / "cat", tiny_llama, "tiny")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["r"] == 6 and cfg["lora_alpha"] == pytest.approx(16 * 6)
    torch.testing.assert_close(_logits_peft(tiny_llama, folder), _logits_hooks(tiny_llama, spec, cat),
                               atol=1e-5, rtol=0)
    back, spec2 = import_peft(folder, tiny_llama)
    assert spec2.rank == 6 and spec2.scale == pytest.approx(spec.scale)
    assert torch.equal(back.A["up_proj"], cat.A["up_proj"])


def test_overwrite_is_atomic_and_clean(tiny_llama, tmp_path):
    spec = LoraSpec()
    out = tmp_path / "x"
    export_peft(random_lora(tiny_llama, spec, 0), spec, out, tiny_llama, "tiny")
    w2 = random_lora(tiny_llama, spec, 5)
    export_peft(w2, spec, out, tiny_llama, "tiny")
    back, _ = import_peft(out, tiny_llama)
    assert torch.equal(back.A["gate_proj"], w2.A["gate_proj"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no temp or old folders left
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_bad_inputs(tiny_llama, tmp_path):
    spec = LoraSpec()
    w = random_lora(tiny_llama, spec, 0)
    with pytest.raises(ValueError, match="one adapter"):
        export_peft(LoraWeights.stack([w, w]), spec, tmp_path / "b", tiny_llama, "tiny")
    with pytest.raises(ValueError, match="layers"):
        export_peft(w, LoraSpec(layers=(0,)), tmp_path / "b", tiny_llama, "tiny")
    with pytest.raises(PeftFormatError, match="adapter_config.json"):
        import_peft(tmp_path / "nothing", tiny_llama)
    folder = export_peft(w, spec, tmp_path / "c", tiny_llama, "tiny")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PeftFormatError, match="use_dora"):
        import_peft(folder, tiny_llama)
    cfg["use_dora"] = False
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(PeftFormatError, match="adapter_model.safetensors"):
        import_peft(folder, tiny_llama)
