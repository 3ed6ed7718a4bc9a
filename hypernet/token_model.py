"""Token-level hypernetworks: the base model's per-layer token states of a document -> every LoRA matrix.

A pooled document vector cannot say "which entity, which value" (HyperLoRA on MiniLM learns one average
adapter); these networks read the document the way the base model itself represents it. Layer l's adapter
is made from layer l's token states (`DocStates`, from `hypernet.encoders.TokenStateEncoder`).

`PerceiverLoRA` (after SakanaAI's Doc-to-LoRA): one cross-attention block stack shared by all layers.
Learned queries, one per (module type, generated rank slot), plus a learned layer embedding, attend over
the layer's document tokens; the resulting vector of each slot is L2-normalized and a linear head per
module type turns it into that slot's row of A and column of B, scaled by learned per (layer, module,
slot) gains. The heads' B rows start at zero, so training starts from the plain model.

`OuterLoRA` (after Generative Adapter): the cheap arm. Per layer and module, the document enters only
through an r x r matrix S = sum_t k_t v_t^T of projected token states (Frobenius-normalized), and the
adapter is B_l S^T A_l with learned per-layer bases A_l, B_l (B_l from zero): r^2 document numbers per
module.

Both keep a learned document-independent "bias" adapter (`bias_rank` slots, what every document shares,
e.g. the answer format) apart from the generated residual, and emit them concatenated along the rank:
A [b, L, bias_rank + r, in], B [b, L, out, bias_rank + r]; `generated_part` slices the residual off,
`shared_part` keeps only the bias slots.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernet.config import HyperNetConfig
from hypernet.encoders import DocStates
from hypernet.model import Shapes, check_shapes, input_dim
from hyperprag.core.lora import LoraSpec, LoraWeights


def generated_rank(config: HyperNetConfig, spec: LoraSpec) -> int:
    """Rank slots made from the document: the adapter's rank minus the document-independent bias slots."""
    r = spec.rank - config.bias_rank
    if r < 1:
        raise ValueError(f"LoRA rank {spec.rank} leaves no generated slot after bias_rank {config.bias_rank}; "
                         "raise spec.rank or lower hypernet.bias_rank")
    return r


def generated_part(weights: LoraWeights, bias_rank: int) -> LoraWeights:
    """The document-dependent slots of a token-level network's adapter (rank bias_rank: onwards)."""
    return LoraWeights({m: a[..., bias_rank:, :] for m, a in weights.A.items()},
                       {m: b[..., bias_rank:] for m, b in weights.B.items()})


def shared_part(weights: LoraWeights, bias_rank: int) -> LoraWeights:
    """The document-independent slots of a token-level network's adapter, the generated ones zeroed: same rank
    and scale, so it stands in for the whole adapter (the control "what would any document's adapter give")."""
    def keep(x: Tensor, dim: int) -> Tensor:
        out = torch.zeros_like(x)
        out.narrow(dim, 0, bias_rank).copy_(x.narrow(dim, 0, bias_rank))
        return out

    return LoraWeights({m: keep(a, -2) for m, a in weights.A.items()}, {m: keep(b, -1) for m, b in weights.B.items()},
                       dict(weights.meta))


class BiasAdapter(nn.Module):
    """A learned document-independent adapter of `rank` slots per layer and module: a plain LoRA (PEFT init,
    B at zero), trained like a teacher's."""

    def __init__(self, shapes: Shapes, rank: int):
        super().__init__()
        self.rank = rank
        self.a = nn.ParameterDict()  # m -> [L, r0, in]
        self.b = nn.ParameterDict()  # m -> [L, out, r0]
        for m, (n_layers, d_in, d_out) in shapes.items():
            bound = 1.0 / math.sqrt(d_in)
            self.a[m] = nn.Parameter((torch.rand(n_layers, rank, d_in) * 2 - 1) * bound)
            self.b[m] = nn.Parameter(torch.zeros(n_layers, d_out, rank))

    def expand(self, m: str, batch: int) -> tuple[Tensor, Tensor]:
        """(A [b, L, r0, in], B [b, L, out, r0]) of module type m for a batch of `batch` documents."""
        a, b = self.a[m], self.b[m]
        return a.expand(batch, *a.shape), b.expand(batch, *b.shape)


def _concat(bias: BiasAdapter | None, m: str, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if bias is None or bias.rank == 0:
        return a, b
    a0, b0 = bias.expand(m, a.shape[0])
    return torch.cat([a0.to(a.dtype), a], dim=-2), torch.cat([b0.to(b.dtype), b], dim=-1)


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention of queries over (already normalized) tokens, then an MLP; both residual."""

    def __init__(self, d: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if d % heads:
            raise ValueError(f"latent_dim {d} is not divisible by heads {heads}")
        self.heads = heads
        self.q_norm, self.mlp_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, queries: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """queries [N, Q, d], tokens [N, T, d], mask [N, T] (True = real) -> [N, Q, d]."""
        n, nq, d = queries.shape
        h = self.heads

        def split(x: Tensor) -> Tensor:  # [N, t, d] -> [N, heads, t, d/heads]
            return x.view(n, x.shape[1], h, d // h).transpose(1, 2)

        q = split(self.q(self.q_norm(queries)))
        k, v = split(self.k(tokens)), split(self.v(tokens))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # [N, h, Q, d/h]
        queries = queries + self.drop(self.o(att.transpose(1, 2).reshape(n, nq, d)))
        return queries + self.drop(self.mlp(self.mlp_norm(queries)))


class PerceiverLoRA(nn.Module):
    """Per-layer document token states -> LoRA matrices through learned queries and cross-attention."""

    def __init__(self, config: HyperNetConfig, shapes: Shapes, spec: LoraSpec):
        super().__init__()
        self.config, self.spec = config, spec
        self.shapes = check_shapes(shapes, spec)
        self.module_types = tuple(spec.target_modules)
        self.rank = generated_rank(config, spec)
        d_state, d = input_dim(config), config.latent_dim
        n_layers = next(iter(self.shapes.values()))[0]
        n_mod = len(self.module_types)
        self.in_norm = nn.LayerNorm(d_state)
        self.in_proj = nn.Linear(d_state, d)
        self.token_norm = nn.LayerNorm(d)
        self.queries = nn.Parameter(torch.randn(n_mod, self.rank, d))  # [M, r, d]
        self.layer_emb = nn.Parameter(torch.randn(n_layers, d) * 0.5)  # [L, d]
        self.blocks = nn.ModuleList(CrossAttentionBlock(d, config.heads, config.dropout)
                                    for _ in range(config.blocks))
        self.out_norm = nn.LayerNorm(d)
        self.heads_out = nn.ModuleDict()
        for m in self.module_types:
            _, d_in, d_out = self.shapes[m]
            head = nn.Linear(d, d_in + d_out, bias=False)
            with torch.no_grad():  # unit-RMS A rows from unit-RMS slot vectors; B columns start at zero
                head.weight[:d_in].normal_(std=1.0 / math.sqrt(d))
                head.weight[d_in:].zero_()
            self.heads_out[m] = head
        # A in PEFT's RMS units, B in units of `b_scale`. B's head rows start at zero (LoRA's own init), so
        # the first adapters are exactly the bias adapter (the plain model) while every weight gets a
        # gradient from the first step; per-slot gains (from 1) let each layer and module find its size.
        self.register_buffer("a_unit", torch.tensor([config.a_init_scale / math.sqrt(3 * self.shapes[m][1])
                                                     for m in self.module_types]))  # [M]
        self.register_buffer("b_unit", torch.tensor([config.b_scale] * n_mod))  # [M]
        self.a_gain = nn.Parameter(torch.ones(n_layers, n_mod, self.rank))  # [L, M, r]
        self.b_gain = nn.Parameter(torch.ones(n_layers, n_mod, self.rank))
        self.bias = BiasAdapter(self.shapes, config.bias_rank) if config.bias_rank else None

    def slot_vectors(self, docs: DocStates) -> Tensor:
        """One unit-RMS vector per (document, layer, module, slot): [b, L, M, r, d]."""
        states, mask = docs.states, docs.mask.bool()  # [b, L, T, H], [b, T]
        b, n_layers, t, _ = states.shape
        tokens = self.token_norm(self.in_proj(self.in_norm(states.to(self.in_proj.weight.dtype))))
        tokens = tokens.reshape(b * n_layers, t, -1)  # [b*L, T, d]: every layer is its own attention problem
        q = self.queries[None, None] + self.layer_emb[None, :, None, None]  # [1, L, M, r, d]
        q = q.expand(b, -1, -1, -1, -1).reshape(b * n_layers, -1, q.shape[-1])  # [b*L, M*r, d]
        key_mask = mask[:, None, :].expand(b, n_layers, t).reshape(b * n_layers, t)
        for block in self.blocks:
            q = block(q, tokens, key_mask)
        z = self.out_norm(q).view(b, n_layers, len(self.module_types), self.rank, -1)
        return F.normalize(z, dim=-1) * math.sqrt(z.shape[-1])

    def forward(self, docs: DocStates) -> LoraWeights:
        z = self.slot_vectors(docs)  # [b, L, M, r, d]
        A, B = {}, {}
        for i, m in enumerate(self.module_types):
            d_in = self.shapes[m][1]
            out = self.heads_out[m](z[:, :, i])  # [b, L, r, in + out]
            a = out[..., :d_in] * (self.a_unit[i] * self.a_gain[:, i, :, None])  # [b, L, r, in]
            bb = out[..., d_in:] * (self.b_unit[i] * self.b_gain[:, i, :, None])  # [b, L, r, out]
            A[m], B[m] = _concat(self.bias, m, a, bb.transpose(-1, -2))
        return LoraWeights(A, B, {"bias_rank": self.config.bias_rank})


class OuterLoRA(nn.Module):
    """Generative-Adapter-style arm: the document sets an r x r mixing matrix per layer and module."""

    def __init__(self, config: HyperNetConfig, shapes: Shapes, spec: LoraSpec):
        super().__init__()
        self.config, self.spec = config, spec
        self.shapes = check_shapes(shapes, spec)
        self.module_types = tuple(spec.target_modules)
        self.rank = r = generated_rank(config, spec)
        d_state = input_dim(config)
        n_layers = next(iter(self.shapes.values()))[0]
        n_mod = len(self.module_types)
        self.in_norm = nn.LayerNorm(d_state)
        self.layer_emb = nn.Parameter(torch.zeros(n_layers, d_state))  # [L, H], added before the key/value maps
        self.key = nn.Linear(d_state, n_mod * r, bias=False)
        self.value = nn.Linear(d_state, n_mod * r, bias=False)
        self.basis_a = nn.ParameterDict()  # m -> [L, r, in]
        self.basis_b = nn.ParameterDict()  # m -> [L, out, r]: a plain LoRA B, from zero (the plain model)
        for m in self.module_types:
            _, d_in, d_out = self.shapes[m]
            self.basis_a[m] = nn.Parameter((torch.rand(n_layers, r, d_in) * 2 - 1) / math.sqrt(d_in))
            self.basis_b[m] = nn.Parameter(torch.zeros(n_layers, d_out, r))
        self.bias = BiasAdapter(self.shapes, config.bias_rank) if config.bias_rank else None

    def forward(self, docs: DocStates) -> LoraWeights:
        states, mask = docs.states, docs.mask.to(self.key.weight.dtype)  # [b, L, T, H], [b, T]
        x = self.in_norm(states.to(self.key.weight.dtype)) + self.layer_emb[None, :, None]
        b, n_layers, t, _ = x.shape
        n_mod, r = len(self.module_types), self.rank
        k = self.key(x).view(b, n_layers, t, n_mod, r) * mask[:, None, :, None, None]
        v = self.value(x).view(b, n_layers, t, n_mod, r)
        s = torch.einsum("bltmi,bltmj->blmij", k, v)  # [b, L, M, r, r]: sum over tokens of k v^T
        s = s / s.flatten(-2).norm(dim=-1).clamp_min(1e-6)[..., None, None] * math.sqrt(r)
        A, B = {}, {}
        for i, m in enumerate(self.module_types):
            a = s[:, :, i].transpose(-1, -2) @ self.basis_a[m]  # [b, L, r, in]
            bb = self.basis_b[m]  # [L, out, r]
            A[m], B[m] = _concat(self.bias, m, a, bb.expand(b, *bb.shape))
        return LoraWeights(A, B, {"bias_rank": self.config.bias_rank})


class MemoryLoRA(nn.Module):
    """A fast-weight copy memory on down_proj, read off the document in one pass.

    Slot s of layer l attends (learned query, over the document's tokens) to the positions it stores; its
    key (row of A) is the down_proj input there and its value (column of B) the embedding of the token that
    follows, each through a learned map that starts at the identity. At answer time the adapter adds
    sum_s v_s (k_s . x): where the question's FFN activity resembles the document's just before a token, it
    writes that token into the residual stream (the model's output embedding is tied or close to its input
    embedding), an in-weights form of "what came next in the document". Only the selection, the maps and
    the per-slot gains are learned: a small network with a strong prior, for a CPU-sized training budget.
    Needs EncoderSpec(kind="tokens", token_states="memory").
    """

    def __init__(self, config: HyperNetConfig, shapes: Shapes, spec: LoraSpec):
        super().__init__()
        self.config, self.spec = config, spec
        self.shapes = check_shapes(shapes, spec)
        if tuple(spec.target_modules) != ("down_proj",):
            raise ValueError(f"the memory network writes down_proj only; spec.target_modules is "
                             f"{list(spec.target_modules)}")
        self.module_types = ("down_proj",)
        self.rank = r = generated_rank(config, spec)
        n_layers, d_in, d_out = self.shapes["down_proj"]
        if input_dim(config) != d_in:
            raise ValueError(f"memory states are down_proj inputs ({d_in}-d), hypernet.emb_dim is {input_dim(config)}")
        d, k = config.latent_dim, config.basis
        self.select_norm = nn.LayerNorm(d_in)
        self.select = nn.Linear(d_in, d)
        self.queries = nn.Parameter(torch.randn(n_layers, r, d))  # [L, r, d]
        # identity + low-rank learned corrections of the keys (down_proj inputs) and values (embeddings)
        self.key_down, self.key_up = nn.Linear(d_in, k, bias=False), nn.Linear(k, d_in, bias=False)
        self.value_down, self.value_up = nn.Linear(d_out, k, bias=False), nn.Linear(k, d_out, bias=False)
        nn.init.zeros_(self.key_up.weight)
        nn.init.zeros_(self.value_up.weight)
        self.register_buffer("a_unit", torch.tensor(config.a_init_scale / math.sqrt(3 * d_in)))
        self.register_buffer("b_unit", torch.tensor(float(config.b_scale)))
        self.a_gain = nn.Parameter(torch.ones(n_layers, r))  # [L, r]
        self.b_gain = nn.Parameter(torch.zeros(n_layers, r))  # B starts at zero: the plain model
        self.bias = BiasAdapter(self.shapes, config.bias_rank) if config.bias_rank else None

    def forward(self, docs: DocStates) -> LoraWeights:
        if docs.values is None:
            raise ValueError("the memory network reads token states 'memory' (down_proj inputs and next-token "
                             "embeddings); this encoder gave 'residual' states")
        dtype = self.select.weight.dtype
        u, v, mask = docs.states.to(dtype), docs.values.to(dtype), docs.mask.bool()  # [b,L,T,I], [b,T,E], [b,T]
        feats = self.select(self.select_norm(u))  # [b, L, T, d]
        scores = torch.einsum("bltd,lrd->blrt", feats, self.queries) / math.sqrt(feats.shape[-1])
        att = scores.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)  # [b, L, r, T]
        keys = torch.einsum("blrt,blti->blri", att, u)  # [b, L, r, I]
        vals = torch.einsum("blrt,bte->blre", att, v)  # [b, L, r, E]
        keys = keys + self.key_up(self.key_down(keys))
        vals = vals + self.value_up(self.value_down(vals))
        keys = keys * torch.rsqrt(keys.pow(2).mean(-1, keepdim=True) + 1e-12)  # unit RMS
        a = keys * (self.a_unit * self.a_gain[..., None])
        bb = (vals * (self.b_unit * self.b_gain[..., None])).transpose(-1, -2)  # [b, L, E, r]
        A, B = _concat(self.bias, "down_proj", a, bb)
        return LoraWeights({"down_proj": A}, {"down_proj": B}, {"bias_rank": self.config.bias_rank})
