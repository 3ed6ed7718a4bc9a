r"""Combine several documents' adapters into one, for answering with the top-k retrieved documents.

For k adapters with matrices (A_i [r, in], B_i [out, r]) of one module, all applied with the same
``spec.scale`` s (the hooks always use ``spec.scale``, whatever the rank of the composed matrices):

* ``"cat"``  rank concatenation  A = [A_1; ...; A_k] (rows), B = [B_1 ... B_k] (columns), rank k*r.
             B A = \sum_i B_i A_i exactly, so  dW = s \sum_i B_i A_i = \sum_i dW_i : the documents'
             updates summed into W (what PRAG's "sum of LoRAs" means mathematically).
* ``"sum"``  parameter-space sum  A = \sum_i A_i, B = \sum_i B_i, rank r.
             dW = s (\sum_i B_i)(\sum_j A_j) = \sum_i dW_i + s \sum_{i != j} B_i A_j  (cross terms included);
             this is what PEFT's add_weighted_adapter(combination_type="linear") and PRAG's code do.
* ``"mean"`` parameter mean  A = (1/k) \sum_i A_i, B = (1/k) \sum_i B_i, rank r.
             dW = (s / k^2) (\sum_i B_i)(\sum_j A_j).
* ``"cat-mean"`` rank concatenation with every B_i scaled by 1/k:  dW = (1/k) \sum_i dW_i, rank k*r.

Composed adapters of different rank are batched by zero-padding the rank, which leaves dW unchanged
(zero rows of A meet zero columns of B).
"""

from __future__ import annotations

import torch

from hyperprag.core.lora import LoraWeights

RULES = ("cat", "sum", "mean", "cat-mean")


def _check(adapters: list[LoraWeights]) -> None:
    if not adapters:
        raise ValueError("compose needs at least one adapter")
    first = adapters[0]
    for i, w in enumerate(adapters[1:], 1):
        if set(w.A) != set(first.A) or set(w.B) != set(first.B):
            raise ValueError(f"adapter {i} has modules {sorted(w.A)}, adapter 0 has {sorted(first.A)}")
        for m in first.A:
            a0, a = first.A[m], w.A[m]
            b0, b = first.B[m], w.B[m]
            # everything but the rank must agree: A [(b,) L, r, in], B [(b,) L, out, r]
            if a.shape[:-2] + a.shape[-1:] != a0.shape[:-2] + a0.shape[-1:] or b.shape[:-1] != b0.shape[:-1]:
                raise ValueError(f"adapter {i} {m}: A{tuple(a.shape)} B{tuple(b.shape)} does not match "
                                 f"adapter 0: A{tuple(a0.shape)} B{tuple(b0.shape)}")
            if a.shape[-2] != b.shape[-1]:
                raise ValueError(f"adapter {i} {m}: rank of A ({a.shape[-2]}) != rank of B ({b.shape[-1]})")


def compose(adapters: list[LoraWeights], rule: str = "cat") -> LoraWeights:
    """One adapter whose update combines `adapters` by `rule` (see the module docstring for the math)."""
    if rule not in RULES:
        raise ValueError(f"unknown compose rule {rule!r}; choose one of {RULES}")
    _check(adapters)
    k = len(adapters)
    mods = list(adapters[0].A)
    if rule in ("cat", "cat-mean"):
        A = {m: torch.cat([w.A[m] for w in adapters], dim=-2) for m in mods}  # [(b,) L, k*r, in]
        B = {m: torch.cat([w.B[m] for w in adapters], dim=-1) for m in mods}  # [(b,) L, out, k*r]
        if rule == "cat-mean":
            B = {m: b / k for m, b in B.items()}
    else:
        if len({w.rank for w in adapters}) != 1:
            raise ValueError(f"rule {rule!r} needs equal ranks, got {[w.rank for w in adapters]}")
        A = {m: torch.stack([w.A[m] for w in adapters]).sum(0) for m in mods}  # [(b,) L, r, in]
        B = {m: torch.stack([w.B[m] for w in adapters]).sum(0) for m in mods}  # [(b,) L, out, r]
        if rule == "mean":
            A = {m: a / k for m, a in A.items()}
            B = {m: b / k for m, b in B.items()}
    meta = {"compose": rule, "k": k}
    doc_ids = [w.meta.get("doc_id") for w in adapters]
    if any(d is not None for d in doc_ids):
        meta["doc_ids"] = doc_ids
    return LoraWeights(A, B, meta)


def zero_like(template: LoraWeights, rank: int = 1) -> LoraWeights:
    """An adapter with the shapes of `template` but rank `rank` and all zeros: dW = 0."""
    A = {m: a.new_zeros(*a.shape[:-2], rank, a.shape[-1]) for m, a in template.A.items()}
    B = {m: b.new_zeros(*b.shape[:-1], rank) for m, b in template.B.items()}
    return LoraWeights(A, B, {"compose": "empty", "k": 0})


def compose_batch(groups: list[list[LoraWeights]], rule: str = "cat") -> LoraWeights:
    """A batched adapter, one composed adapter per question, zero-padded to the largest rank.

    An empty group (no document retrieved) becomes a zero adapter, i.e. the plain base model.
    """
    if not groups:
        raise ValueError("compose_batch needs at least one group")
    template = next((g[0] for g in groups if g), None)
    if template is None:
        raise ValueError("compose_batch: every group is empty; nothing gives the adapter shapes")
    if template.batched:
        raise ValueError("compose_batch takes unbatched adapters")
    composed = [compose(g, rule) if g else zero_like(template) for g in groups]
    out = LoraWeights.stack(composed)  # A [b, L, R, in], B [b, L, out, R]
    out.meta = {"compose": rule, "k": [c.meta["k"] for c in composed]}
    return out
