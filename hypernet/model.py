"""Hypernetworks mapping a document embedding to every LoRA matrix of a base model.

`HyperLoRA` (ours, text-to-LoRA style): the embedding is projected once, added to a learned embedding of
each (layer, module type) pair and passed through one shared residual MLP trunk ([b, L*M, h], one pass
for all pairs). A small head per module type turns the trunk output into coefficients over a learned
basis of that module type's input (A rows) and output (B columns) directions, so the heads cost
K * (in + out) parameters instead of h * r * (in + out), and a learned document-independent "mean adapter"
holds what every document shares (e.g. the teacher's common A init).

`DyPRAGBaseline` (their design, for comparison): one two-layer MLP per (layer, module) and per A/B, input
the embedding concatenated with the layer index, output the flattened matrix.

Output shapes come from `target_shapes(config, spec)`, so any Llama / Qwen2 / Gemma3-style model works.
`python -m hypernet.model` prints parameter counts at SmolLM2-135M and Llama-3.2-1B sizes.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernet.config import HyperNetConfig
from hyperprag.core.lora import LoraSpec, LoraWeights, target_shapes

Shapes = dict[str, tuple[int, int, int]]  # module type -> (num_layers, in_features, out_features)


def check_shapes(shapes: Shapes, spec: LoraSpec) -> Shapes:
    missing = [m for m in spec.target_modules if m not in shapes]
    if missing:
        raise ValueError(f"shapes lack target modules {missing} (have {sorted(shapes)})")
    out = {m: tuple(int(x) for x in shapes[m]) for m in spec.target_modules}
    layers = {s[0] for s in out.values()}
    if len(layers) != 1:
        raise ValueError(f"every module type needs the same number of layers, got {out}")
    return out  # type: ignore[return-value]


def input_dim(config: HyperNetConfig) -> int:
    if config.emb_dim is None:
        raise ValueError("HyperNetConfig.emb_dim is None: resolve it from the encoder before building the model")
    return int(config.emb_dim)


class _ResBlock(nn.Module):
    """Pre-norm residual MLP block: x + W2 silu(W1 LN(x))."""

    def __init__(self, h: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, 2 * h)
        self.fc2 = nn.Linear(2 * h, h)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(self.fc2(F.silu(self.fc1(self.norm(x)))))


class HyperLoRA(nn.Module):
    """Document embedding [b, d] -> batched LoraWeights (A [b, L, r, in], B [b, L, out, r] per module type).

    Outputs are `a_scale * (mean + coef @ basis)` and `b_scale * (mean + basis @ coef)` with O(1) learned
    parts and fixed per-module-type scales (buffers), so one learning rate fits A (~1/sqrt(in)) and the
    ~1e-3 values of trained B alike.
    """

    def __init__(self, config: HyperNetConfig, shapes: Shapes, spec: LoraSpec):
        super().__init__()
        self.config, self.spec = config, spec
        self.shapes = check_shapes(shapes, spec)
        self.module_types = tuple(spec.target_modules)
        d, h, k, r = input_dim(config), config.hidden, config.basis, spec.rank
        n_layers = next(iter(self.shapes.values()))[0]
        self.in_norm = nn.LayerNorm(d)  # LLM hidden states and unit sentence vectors alike
        self.proj = nn.Linear(d, h)
        self.drop = nn.Dropout(config.dropout)
        self.layer_emb = nn.Parameter(torch.randn(n_layers, h) * 0.5)  # [L, h]
        self.module_emb = nn.Parameter(torch.randn(len(self.module_types), h) * 0.5)  # [M, h]
        self.blocks = nn.ModuleList(_ResBlock(h, config.dropout) for _ in range(config.trunk_layers))
        self.out_norm = nn.LayerNorm(h)
        self.a_coef = nn.ModuleDict({m: nn.Linear(h, r * k) for m in self.module_types})
        self.b_coef = nn.ModuleDict({m: nn.Linear(h, k * r) for m in self.module_types})
        self.a_basis = nn.ParameterDict()  # m -> [K, in]: directions A's rows are made of
        self.b_basis = nn.ParameterDict()  # m -> [out, K]: directions B's columns are made of
        self.a_mean = nn.ParameterDict()  # m -> [L, r, in]: document-independent part of A (in a_scale units)
        self.b_mean = nn.ParameterDict()  # m -> [L, out, r]
        a_scale, b_scale = [], []
        for m in self.module_types:
            _, d_in, d_out = self.shapes[m]
            self.a_basis[m] = nn.Parameter(torch.randn(k, d_in))  # unit-RMS entries
            self.b_basis[m] = nn.Parameter(torch.randn(d_out, k))
            if config.mean_adapter:
                self.a_mean[m] = nn.Parameter(torch.zeros(n_layers, r, d_in))
                self.b_mean[m] = nn.Parameter(torch.zeros(n_layers, d_out, r))
            # coef = head(z) / sqrt(h) with ~unit trunk outputs z: coef std = w_std, product std = sqrt(K) * w_std.
            # The 1/sqrt(h) multiplier keeps AdamW's first steps (each weight moves ~lr, coherently over h
            # inputs) from throwing the small initial B straight to teacher size in a random direction.
            nn.init.normal_(self.a_coef[m].weight, std=config.a_init_scale / math.sqrt(k))
            nn.init.normal_(self.b_coef[m].weight, std=config.b_init / math.sqrt(k))
            nn.init.zeros_(self.a_coef[m].bias)
            nn.init.zeros_(self.b_coef[m].bias)
            a_scale.append(1.0 / math.sqrt(3 * d_in))  # PEFT's kaiming-uniform(a=sqrt 5) RMS
            b_scale.append(config.b_scale)
        self.register_buffer("a_scale", torch.tensor(a_scale))  # [M]
        self.register_buffer("b_scale", torch.tensor(b_scale))  # [M]
        self.register_buffer("calibrated", torch.tensor(False))  # restored with a checkpoint: never twice
        self._head_mult = 1.0 / math.sqrt(h)

    @torch.no_grad()
    def calibrate(self, teachers: LoraWeights) -> dict[str, tuple[float, float]]:
        """Set the output scales to the RMS of the teachers' A and B per module type; returns them."""
        out = {}
        for i, m in enumerate(self.module_types):
            a_rms = float(teachers.A[m].float().pow(2).mean().sqrt())
            b_rms = float(teachers.B[m].float().pow(2).mean().sqrt())
            if a_rms > 0:
                self.a_scale[i] = a_rms
            if b_rms > 0:
                self.b_scale[i] = b_rms
            out[m] = (float(self.a_scale[i]), float(self.b_scale[i]))
        self.calibrated.fill_(True)
        return out

    def trunk(self, emb: Tensor) -> Tensor:
        """emb [b, d] -> features of every (layer, module type) pair [b, L, M, h]."""
        x = self.drop(self.proj(self.in_norm(emb)))  # [b, h]
        x = x[:, None, None, :] + self.layer_emb[None, :, None, :] + self.module_emb[None, None, :, :]
        for block in self.blocks:
            x = block(x)
        return self.out_norm(x)

    def forward(self, emb: Tensor) -> LoraWeights:
        squeeze = emb.dim() == 1
        emb = emb.unsqueeze(0) if squeeze else emb  # [b, d]
        z = self.trunk(emb.to(self.proj.weight.dtype))  # [b, L, M, h]
        b, n_layers = z.shape[0], z.shape[1]
        r, k = self.spec.rank, self.config.basis
        A, B = {}, {}
        for i, m in enumerate(self.module_types):
            zm = z[:, :, i]  # [b, L, h]
            ca = self.a_coef[m](zm).view(b, n_layers, r, k) * self._head_mult  # [b, L, r, K]
            cb = self.b_coef[m](zm).view(b, n_layers, k, r) * self._head_mult  # [b, L, K, r]
            a = ca @ self.a_basis[m]  # [b, L, r, in]
            bb = torch.einsum("ok,blkr->blor", self.b_basis[m], cb)  # [b, L, out, r]
            if self.config.mean_adapter:
                a, bb = a + self.a_mean[m], bb + self.b_mean[m]
            A[m], B[m] = self.a_scale[i] * a, self.b_scale[i] * bb
        out = LoraWeights(A, B)
        return out.select(0) if squeeze else out


class DyPRAGBaseline(nn.Module):
    """DyPRAG's parameter translator: per (layer, module) MLPs [emb; layer] -> h -> flattened A and B."""

    def __init__(self, config: HyperNetConfig, shapes: Shapes, spec: LoraSpec):
        super().__init__()
        self.config, self.spec = config, spec
        self.shapes = check_shapes(shapes, spec)
        self.module_types = tuple(spec.target_modules)
        d, h, r = input_dim(config), config.dyprag_hidden, spec.rank
        n_layers = next(iter(self.shapes.values()))[0]
        self.layer_ids = list(spec.layers) if spec.layers is not None else list(range(n_layers))
        self.nets = nn.ModuleDict()
        for m in self.module_types:
            _, d_in, d_out = self.shapes[m]
            for pos in range(n_layers):
                net = nn.ModuleDict({
                    "pre_A": nn.Linear(d + 1, h, bias=False), "post_A": nn.Linear(h, r * d_in, bias=False),
                    "pre_B": nn.Linear(d + 1, h, bias=False), "post_B": nn.Linear(h, d_out * r, bias=False)})
                if config.dyprag_init == "paper":
                    for lin in net.values():
                        nn.init.normal_(lin.weight, std=1e-7)
                else:  # ReLU features of ~unit inputs have second moment ~1/2
                    nn.init.normal_(net["post_A"].weight, std=config.a_init_scale / math.sqrt(3 * d_in * h / 2))
                    nn.init.normal_(net["post_B"].weight, std=config.b_init * config.b_scale / math.sqrt(h / 2))
                self.nets[f"{m}_{pos}"] = net

    def forward(self, emb: Tensor) -> LoraWeights:
        squeeze = emb.dim() == 1
        emb = emb.unsqueeze(0) if squeeze else emb  # [b, d]
        b, r = emb.shape[0], self.spec.rank
        A, B = {}, {}
        for m in self.module_types:
            _, d_in, d_out = self.shapes[m]
            a_list, b_list = [], []
            for pos, layer in enumerate(self.layer_ids):
                net = self.nets[f"{m}_{pos}"]
                x = torch.cat([emb, emb.new_full((b, 1), float(layer))], dim=1)  # [b, d+1]
                a_list.append(net["post_A"](F.relu(net["pre_A"](x))).view(b, r, d_in))
                b_list.append(net["post_B"](F.relu(net["pre_B"](x))).view(b, d_out, r))
            A[m], B[m] = torch.stack(a_list, 1), torch.stack(b_list, 1)  # [b, L, r, in], [b, L, out, r]
        out = LoraWeights(A, B)
        return out.select(0) if squeeze else out


def build_hypernet(config: HyperNetConfig, shapes: Shapes, spec: LoraSpec) -> nn.Module:
    """The network `config.arch` names."""
    from hypernet.token_model import MemoryLoRA, OuterLoRA, PerceiverLoRA

    cls = {"hyperlora": HyperLoRA, "dyprag": DyPRAGBaseline, "perceiver": PerceiverLoRA, "outer": OuterLoRA,
           "memory": MemoryLoRA}
    return cls[config.arch](config, shapes, spec)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def reference_configs() -> dict:
    """Architectures to size against, built without any download (numbers from the models' config.json)."""
    from transformers import LlamaConfig

    return {
        "SmolLM2-135M": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
        "Llama-3.2-1B": LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                                    num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                                    tie_word_embeddings=True),
    }


def parameter_table(spec: LoraSpec | None = None, config: HyperNetConfig | None = None,
                    token_rank: int = 8) -> list[dict]:
    """Parameter counts of every architecture at reference sizes (built on the meta device); the token-level
    ones generate adapters of rank `token_rank` (config.bias_rank of them document-independent), the memory
    network on down_proj only."""
    spec = spec or LoraSpec()
    base = config or HyperNetConfig()
    rows = []
    for name, cfg in reference_configs().items():
        token_spec = replace(spec, rank=token_rank)
        for arch, emb_dim, arch_spec in [
                ("hyperlora", 384, spec), ("hyperlora", cfg.hidden_size, spec), ("dyprag", cfg.hidden_size, spec),
                ("perceiver", cfg.hidden_size, token_spec), ("outer", cfg.hidden_size, token_spec),
                ("memory", cfg.intermediate_size, replace(token_spec, target_modules=("down_proj",)))]:
            shapes = target_shapes(cfg, arch_spec)
            c = HyperNetConfig(**{**base.to_dict(), "arch": arch, "emb_dim": emb_dim})
            with torch.device("meta"):
                net = build_hypernet(c, shapes, arch_spec)
            lora = sum(n * arch_spec.rank * (i + o) for n, i, o in shapes.values())
            rows.append({"base": name, "arch": arch, "emb_dim": emb_dim, "rank": arch_spec.rank,
                         "params": count_parameters(net), "lora_params": lora})
    return rows


def main() -> None:
    """Print `parameter_table()`."""
    print(f"{'base model':14} {'arch':10} {'emb_dim':>7} {'rank':>4} {'params':>12} {'one LoRA':>10}")
    for row in parameter_table():
        print(f"{row['base']:14} {row['arch']:10} {row['emb_dim']:>7} {row['rank']:>4} {row['params']:>12,} "
              f"{row['lora_params']:>10,}")


if __name__ == "__main__":
    main()
