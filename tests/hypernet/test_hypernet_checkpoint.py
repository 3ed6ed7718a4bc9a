"""A hypernetwork folder round-trips exactly (JSON + safetensors) and refuses another base model or spec."""

from __future__ import annotations

import json

import pytest
import torch

from hypernet.checkpoint import HypernetCheckpointError, HypernetMismatchError, load_hypernet, save_hypernet
from hypernet.config import EncoderSpec, HyperNetConfig
from hypernet.model import build_hypernet
from hyperprag.core.lora import LoraSpec, target_shapes

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", ["hyperlora", "dyprag"])
def test_round_trip(arch, tiny_llama, tmp_path):
    spec = LoraSpec(rank=2, alpha=32)
    shapes = target_shapes(tiny_llama, spec)
    cfg = HyperNetConfig(arch=arch, emb_dim=16, hidden=32, basis=8, dyprag_hidden=4)
    net = build_hypernet(cfg, shapes, spec)
    if arch == "hyperlora":
        net.calibrate(net(torch.randn(3, 16)))  # buffers travel too
    enc = EncoderSpec(kind="llm", layer=-2, pooling="last")
    folder = save_hypernet(tmp_path / "hn", net, cfg, spec, "tiny-llama", enc, shapes, meta={"epoch": 3})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_hypernet(folder, expect_base_model="tiny-llama", expect_spec=spec, expect_shapes=shapes)
    assert loaded.encoder == enc and loaded.config == cfg and loaded.spec == spec and loaded.meta == {"epoch": 3}
    emb = torch.randn(2, 16)
    with torch.no_grad():
        want = net.eval()(emb)
    got = loaded.generate(emb)
    for m in spec.target_modules:
        assert torch.equal(got.A[m], want.A[m]) and torch.equal(got.B[m], want.B[m])
    # saving again replaces the folder whole
    save_hypernet(folder, net, cfg, spec, "tiny-llama", enc, shapes)
    assert json.loads((folder / "config.json").read_text())["meta"] == {}


def test_mismatch_is_refused_with_a_clear_message(tiny_llama, tmp_path):
    spec = LoraSpec()
    shapes = target_shapes(tiny_llama, spec)
    cfg = HyperNetConfig(emb_dim=16, hidden=16, basis=4)
    folder = save_hypernet(tmp_path / "hn", build_hypernet(cfg, shapes, spec), cfg, spec, "tiny-llama",
                           EncoderSpec(), shapes)
    with pytest.raises(HypernetMismatchError, match="base_model is 'tiny-llama'.*'smollm2-135m' was expected"):
        load_hypernet(folder, expect_base_model="smollm2-135m")
    with pytest.raises(HypernetMismatchError, match="spec.rank"):
        load_hypernet(folder, expect_spec=LoraSpec(rank=4))
    with pytest.raises(HypernetMismatchError, match="spec.target_modules"):
        load_hypernet(folder, expect_spec=LoraSpec(target_modules=("up_proj",)))
    with pytest.raises(HypernetMismatchError, match="shapes"):
        load_hypernet(folder, expect_shapes={m: (3, i, o) for m, (n, i, o) in shapes.items()})
    with pytest.raises(HypernetCheckpointError, match="not a hypernetwork folder"):
        load_hypernet(tmp_path)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(HypernetCheckpointError, match="cannot read safetensors"):
        load_hypernet(folder)
