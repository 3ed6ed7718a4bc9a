"""Read and write adapters as standard PEFT folders, so any PEFT/vLLM/TGI user can load a document's LoRA.

A folder holds ``adapter_config.json`` (a ``peft.LoraConfig``) and ``adapter_model.safetensors`` with PEFT's
key names, e.g. ``base_model.model.model.layers.3.mlp.gate_proj.lora_A.weight`` ([r, in]) and
``...lora_B.weight`` ([out, r]). Module names come from the model itself (``named_modules``), so any
Llama/Gemma3-style architecture works. PEFT computes ``W x + (lora_alpha / r) * B A x``, the same as
``apply_lora`` with ``spec.scale``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from hyperprag.core.errors import InputError
from hyperprag.core.io import write_dir
from hyperprag.core.lora import LoraSpec, LoraWeights, find_targets

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


class PeftFormatError(InputError, ValueError):
    """A PEFT folder this module cannot read (missing file, unsupported option, wrong shapes)."""


def _as_model(model_or_config) -> nn.Module:
    """A model, or one built on the meta device from a config / a folder or hub id holding a config."""
    if isinstance(model_or_config, nn.Module):
        return model_or_config
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    config = model_or_config
    if not isinstance(config, PretrainedConfig):
        config = AutoConfig.from_pretrained(str(config))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def target_names(model_or_config, spec: LoraSpec) -> dict[str, list[tuple[int, str, nn.Linear]]]:
    """Module type -> [(layer index, full module name, module)] sorted by layer, in LoraWeights order."""
    model = _as_model(model_or_config)
    names = {id(mod): name for name, mod in model.named_modules()}
    return {m: [(layer, names[id(mod)], mod) for layer, mod in mods]
            for m, mods in find_targets(model, spec).items()}


def export_peft(weights: LoraWeights, spec: LoraSpec, out_dir: str | Path, model_or_config,
                base_model_name_or_path: str) -> Path:
    """Write `weights` (unbatched) as a PEFT LoRA folder at `out_dir`, atomically; returns `out_dir`.

    If the adapter's rank R differs from `spec.rank` (ranks concatenated by `compose`), the folder gets
    r=R and lora_alpha=spec.scale*R, so PEFT applies the same update as `apply_lora(model, spec, weights)`.
    """
    from peft import LoraConfig

    if weights.batched:
        raise ValueError("export_peft takes one adapter; select an example from a batched LoraWeights first")
    out_dir = Path(out_dir)
    targets = target_names(model_or_config, spec)
    rank = weights.rank
    tensors: dict[str, Tensor] = {}
    for m, mods in targets.items():
        if m not in weights.A or m not in weights.B:
            raise ValueError(f"adapter has no weights for target module {m!r} (has {sorted(weights.A)})")
        A, B = weights.A[m], weights.B[m]  # [L, r, in], [L, out, r]
        if A.shape[0] != len(mods) or B.shape[0] != len(mods):
            raise ValueError(f"adapter has {A.shape[0]} layers of {m}, model has {len(mods)}")
        for pos, (_, name, mod) in enumerate(mods):
            if A.shape[1:] != (rank, mod.in_features) or B.shape[1:] != (mod.out_features, rank):
                raise ValueError(f"{name}: adapter shapes A{tuple(A.shape[1:])} B{tuple(B.shape[1:])} do not fit "
                                 f"Linear({mod.in_features} -> {mod.out_features}) at rank {rank}")
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A[pos].detach().cpu().contiguous()
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = B[pos].detach().cpu().contiguous()
    config = LoraConfig(r=rank, lora_alpha=spec.scale * rank, target_modules=list(spec.target_modules),
                        layers_to_transform=None if spec.layers is None else list(spec.layers),
                        lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        base_model_name_or_path=base_model_name_or_path)

    def fill(tmp: Path) -> None:
        config.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})

    return write_dir(out_dir, fill, marker=ADAPTER_CONFIG)


def _read_config(folder: Path) -> dict:
    path = folder / ADAPTER_CONFIG
    if not path.exists():
        raise PeftFormatError(f"{path}: missing (not a PEFT adapter folder)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PeftFormatError(f"{path}: invalid JSON ({err})") from err
    if cfg.get("peft_type", "LORA") != "LORA":
        raise PeftFormatError(f"{path}: peft_type {cfg.get('peft_type')!r}, only LORA is supported")
    for field, ok in [("use_dora", False), ("bias", "none")]:
        if cfg.get(field, ok) != ok:
            raise PeftFormatError(f"{path}: {field}={cfg[field]!r} is not supported (needs {ok!r})")
    for field in ("rank_pattern", "alpha_pattern"):
        if cfg.get(field):
            raise PeftFormatError(f"{path}: {field} is not supported (per-module ranks/alphas)")
    if not isinstance(cfg.get("target_modules"), list):
        raise PeftFormatError(f"{path}: target_modules must be a list of module names, "
                              f"got {cfg.get('target_modules')!r}")
    return cfg


def import_peft(folder: str | Path, model_or_config) -> tuple[LoraWeights, LoraSpec]:
    """Read a PEFT LoRA folder (safetensors) into (unbatched LoraWeights, LoraSpec) for `model_or_config`."""
    folder = Path(folder)
    cfg = _read_config(folder)
    wpath = folder / ADAPTER_WEIGHTS
    if not wpath.exists():
        raise PeftFormatError(f"{wpath}: missing (only safetensors adapters are supported)")
    try:
        state = load_file(str(wpath))
    except Exception as err:  # safetensors raises its own error type for truncated/corrupt files
        raise PeftFormatError(f"{wpath}: cannot read safetensors ({err})") from err
    r = int(cfg["r"])
    alpha = float(cfg["lora_alpha"])
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    layers = cfg.get("layers_to_transform")
    if isinstance(layers, int):
        layers = [layers]
    # Keep the model's own module order (gate, up, down) rather than the config's (possibly sorted) list.
    wanted = set(cfg["target_modules"])
    model = _as_model(model_or_config)
    order = []
    for name, mod in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in wanted and last not in order and isinstance(mod, nn.Linear):
            order.append(last)
    missing = wanted - set(order)
    if missing:
        raise PeftFormatError(f"{folder / ADAPTER_CONFIG}: target_modules {sorted(missing)} not in "
                              f"{type(model).__name__}")
    spec = LoraSpec(rank=r, alpha=scale * r, target_modules=tuple(order),
                    layers=None if layers is None else tuple(layers))
    targets = target_names(model, spec)
    A: dict[str, Tensor] = {}
    B: dict[str, Tensor] = {}
    used = set()
    for m, mods in targets.items():
        a_list, b_list = [], []
        for _, name, mod in mods:
            ka, kb = f"{PEFT_PREFIX}{name}.lora_A.weight", f"{PEFT_PREFIX}{name}.lora_B.weight"
            for key in (ka, kb):
                if key not in state:
                    raise PeftFormatError(f"{wpath}: tensor {key!r} missing")
            a, b = state[ka], state[kb]
            if a.shape != (r, mod.in_features) or b.shape != (mod.out_features, r):
                raise PeftFormatError(f"{wpath}: {name} has A{tuple(a.shape)} B{tuple(b.shape)}, expected "
                                      f"A({r}, {mod.in_features}) B({mod.out_features}, {r})")
            a_list.append(a)
            b_list.append(b)
            used.update((ka, kb))
        A[m], B[m] = torch.stack(a_list), torch.stack(b_list)  # [L, r, in], [L, out, r]
    extra = [k for k in state if k not in used]
    if extra:  # e.g. modules_to_save or other layers: dropping them would silently change the adapter
        raise PeftFormatError(f"{wpath}: {len(extra)} tensors outside the LoRA spec, e.g. {extra[0]!r}")
    meta = {"base_model_name_or_path": cfg.get("base_model_name_or_path"), "peft_folder": str(folder)}
    return LoraWeights(A, B, meta), spec
