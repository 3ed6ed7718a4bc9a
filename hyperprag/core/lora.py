"""LoRA adapters as plain tensors, applied to any HF causal LM through forward hooks.

One representation serves the teacher, the hypernetwork and answering: for each target module type
(``gate_proj``, ``up_proj``, ``down_proj`` by default) a stack over layers

    A[m]: [(batch,) L, r, in_m]      B[m]: [(batch,) L, out_m, r]

so that module ``m`` of layer ``l`` computes ``y = W x + scale * B[l] @ (A[l] @ x)`` with
``scale = alpha / r``, the same arithmetic as PEFT's ``lora_B(lora_A(x)) * scaling``. A leading batch
dimension gives every sequence of a batch its own adapter (batched teacher training, batched answering);
without it one adapter is shared by the whole batch. Hooks leave the model's source untouched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

FFN_MODULES = ("gate_proj", "up_proj", "down_proj")
_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:.*\.)?([A-Za-z_0-9]+)$")


@dataclass(frozen=True)
class LoraSpec:
    """Which modules carry a LoRA and its size; shared by teacher, hypernetwork and stores."""

    rank: int = 2
    """LoRA rank r."""
    alpha: float = 32.0
    """LoRA alpha; the update is scaled by alpha / rank."""
    target_modules: tuple[str, ...] = FFN_MODULES
    """Module-name suffixes that get an adapter (FFN projections by default)."""
    layers: tuple[int, ...] | None = None
    """Layer indices that get adapters; None means every layer."""

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["layers"] = None if self.layers is None else list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LoraSpec:
        return cls(rank=int(d["rank"]), alpha=float(d["alpha"]), target_modules=tuple(d["target_modules"]),
                   layers=None if d.get("layers") is None else tuple(d["layers"]))


def find_targets(model: nn.Module, spec: LoraSpec) -> dict[str, list[tuple[int, nn.Linear]]]:
    """Module type -> [(layer index, linear module)] sorted by layer, for every target in `spec`."""
    found: dict[str, list[tuple[int, nn.Linear]]] = {m: [] for m in spec.target_modules}
    for name, module in model.named_modules():
        match = _LAYER_RE.search(name)
        if not match or not isinstance(module, nn.Linear):
            continue
        layer, mtype = int(match.group(1)), match.group(2)
        if mtype in found and (spec.layers is None or layer in spec.layers):
            found[mtype].append((layer, module))
    for mtype, mods in found.items():
        if not mods:
            raise ValueError(f"target module {mtype!r} not found in {type(model).__name__}; "
                             "check LoraSpec.target_modules against the model's module names")
        mods.sort(key=lambda t: t[0])
    return found


def target_shapes(model_or_config, spec: LoraSpec) -> dict[str, tuple[int, int, int]]:
    """Module type -> (num_layers, in_features, out_features), from a model or just its config.

    A config is instantiated on the meta device, so shapes come from the architecture itself and any
    Llama/Qwen2/Gemma-style model works without listing its dimensions here.
    """
    if isinstance(model_or_config, nn.Module):
        model = model_or_config
    else:
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_or_config)
    shapes = {}
    for mtype, mods in find_targets(model, spec).items():
        ins = {m.in_features for _, m in mods}
        outs = {m.out_features for _, m in mods}
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"{mtype} has different shapes across layers ({ins} -> {outs}); unsupported")
        shapes[mtype] = (len(mods), ins.pop(), outs.pop())
    return shapes


@dataclass
class LoraWeights:
    """A (possibly batched) set of LoRA matrices for every target module type."""

    A: dict[str, Tensor]  # m -> [(b,) L, r, in]
    B: dict[str, Tensor]  # m -> [(b,) L, out, r]
    meta: dict = field(default_factory=dict)

    @property
    def batched(self) -> bool:
        first = next(iter(self.A.values()))
        return first.dim() == 4

    @property
    def rank(self) -> int:
        return next(iter(self.A.values())).shape[-2]

    def to(self, *args, **kwargs) -> LoraWeights:
        return LoraWeights({m: a.to(*args, **kwargs) for m, a in self.A.items()},
                           {m: b.to(*args, **kwargs) for m, b in self.B.items()}, dict(self.meta))

    def detach(self) -> LoraWeights:
        return LoraWeights({m: a.detach() for m, a in self.A.items()},
                           {m: b.detach() for m, b in self.B.items()}, dict(self.meta))

    def select(self, index: int | Tensor | list[int]) -> LoraWeights:
        """Pick examples from a batched set (an int drops the batch dimension)."""
        return LoraWeights({m: a[index] for m, a in self.A.items()},
                           {m: b[index] for m, b in self.B.items()}, dict(self.meta))

    def delta(self, mtype: str, layer_pos: int, scale: float) -> Tensor:
        """The explicit update scale * B @ A of one module ([(b,) out, in]); for tests and small models."""
        return scale * self.B[mtype][..., layer_pos, :, :] @ self.A[mtype][..., layer_pos, :, :]

    @staticmethod
    def stack(items: list[LoraWeights]) -> LoraWeights:
        """Stack unbatched sets into one batched set, zero-padding ranks to the largest."""
        r = max(w.rank for w in items)
        A = {m: torch.stack([_pad_rank(w.A[m], r, dim=-2) for w in items]) for m in items[0].A}
        B = {m: torch.stack([_pad_rank(w.B[m], r, dim=-1) for w in items]) for m in items[0].B}
        return LoraWeights(A, B)

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.A.values(), *self.B.values()])


def _pad_rank(t: Tensor, r: int, dim: int) -> Tensor:
    extra = r - t.shape[dim]
    if extra == 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def init_lora(shapes: dict[str, tuple[int, int, int]], spec: LoraSpec, seed: int = 0, batch: int | None = None,
              dtype: torch.dtype = torch.float32) -> LoraWeights:
    """PEFT's default initialization (A ~ kaiming-uniform(a=sqrt 5), B = 0), reproducible by `seed`.

    With `batch`, every element gets the same starting point: PRAG trains every document from one init.
    """
    gen = torch.Generator().manual_seed(seed)
    A, B = {}, {}
    for m in spec.target_modules:
        n_layers, d_in, d_out = shapes[m]
        bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform_(a=sqrt(5)) on an [r, in] weight
        a = (torch.rand(n_layers, spec.rank, d_in, generator=gen) * 2 - 1) * bound
        b = torch.zeros(n_layers, d_out, spec.rank)
        if batch is not None:
            a, b = a.expand(batch, *a.shape).clone(), b.expand(batch, *b.shape).clone()
        A[m], B[m] = a.to(dtype), b.to(dtype)
    return LoraWeights(A, B)


def _make_hook(A: Tensor, B: Tensor, scale: float):
    """Forward hook adding scale * B(A x); A: [(b,) r, in], B: [(b,) out, r]."""

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        x = inputs[0].to(A.dtype)
        if A.dim() == 2:
            delta = (x @ A.transpose(0, 1)) @ B.transpose(0, 1)
        else:  # per-example adapters: x [b, t, in] (or [b, in])
            squeeze = x.dim() == 2
            xs = x.unsqueeze(1) if squeeze else x
            if xs.shape[0] != A.shape[0]:
                raise ValueError(f"batch of {xs.shape[0]} sequences but {A.shape[0]} per-example adapters")
            delta = torch.bmm(torch.bmm(xs, A.transpose(1, 2)), B.transpose(1, 2))
            delta = delta.squeeze(1) if squeeze else delta
        return output + (scale * delta).to(output.dtype)

    return hook


@contextmanager
def apply_lora(model: nn.Module, spec: LoraSpec, weights: LoraWeights | None) -> Iterator[None]:
    """Run `model` with `weights` added to its target modules inside the block; gradients flow to them.

    `weights=None` is the plain model. Batched weights must match the batch size of every forward call.
    """
    if weights is None:
        yield
        return
    handles = []
    try:
        for mtype, mods in find_targets(model, spec).items():
            A, B = weights.A[mtype], weights.B[mtype]
            n_layers = A.shape[-3]
            if n_layers != len(mods):
                raise ValueError(f"adapter has {n_layers} layers of {mtype}, model has {len(mods)}")
            for pos, (_, module) in enumerate(mods):
                handles.append(module.register_forward_hook(_make_hook(A[..., pos, :, :], B[..., pos, :, :],
                                                                       spec.scale)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def merged_lora(model: nn.Module, spec: LoraSpec, weights: LoraWeights | None) -> Iterator[None]:
    """Like `apply_lora` for one shared adapter, but merged into the weights: no per-token overhead.

    The original weight tensors are put back untouched on exit (no subtract-and-drift).
    """
    if weights is None:
        yield
        return
    if weights.batched:
        raise ValueError("merged_lora takes one adapter; use apply_lora for per-example adapters")
    saved: list[tuple[nn.Linear, nn.Parameter]] = []
    try:
        with torch.no_grad():
            for mtype, mods in find_targets(model, spec).items():
                A, B = weights.A[mtype], weights.B[mtype]
                for pos, (_, module) in enumerate(mods):
                    orig = module.weight
                    merged = torch.addmm(orig.float(), B[pos].float(), A[pos].float(), alpha=spec.scale)
                    saved.append((module, orig))
                    module.weight = nn.Parameter(merged.to(orig.dtype), requires_grad=False)
        yield
    finally:
        for module, orig in saved:
            module.weight = orig
