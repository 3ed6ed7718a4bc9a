"""Document encoders (the hypernetwork's input) and an on-disk cache of their embeddings.

* `SentenceEncoder`: the bundled all-MiniLM-L6-v2 (384-d, unit norm), via hyperprag.core.embedders.
* `LLMEncoder`: the base LLM's own hidden states at one layer, mean- or last-token-pooled over real
  tokens (DyPRAG uses the LLM's last token), batched, padding-side agnostic, without gradients.
* `TokenStateEncoder`: the base LLM's per-layer token states, unpooled (`DocStates`): the input of the
  token-level hypernetworks (hypernet/token_model.py). They are recomputed, not cached: one no-grad
  forward of the base model per document batch, while a cache would hold ~4 MB per document (SmolLM2,
  bf16) for documents a CPU training run sees about once.

The LLM encoders' base pass runs in `EncoderSpec.compute_dtype`: float32, or bfloat16 under autocast, which
halves its time where the hardware multiplies bf16 natively (recent x86 CPUs, GPUs); "auto" picks it there.

`EmbeddingCache` stores one safetensors file per encoder id, keyed by each document's content hash, so a
training corpus is encoded once and reused by every run (and every DDP rank) with that encoder.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save

from hypernet.config import COMPUTE_DTYPES, TOKEN_STATES, EncoderSpec
from hyperprag.core.io import atomic_write_bytes


@dataclass
class DocStates:
    """Per-layer token states of a batch of documents, right-padded: what token-level hypernetworks read."""

    states: torch.Tensor
    """[b, L, T, H]: entry l is, at every document token, the input of the l-th adapted layer (token states
    "residual") or of its down_proj (token states "memory")."""
    mask: torch.Tensor
    """[b, T]: 1 at real tokens ("memory": at real tokens followed by a real token), 0 elsewhere."""
    values: torch.Tensor | None = None
    """"memory" only, [b, T, E]: the input embedding of the token that follows each document token."""

    def __len__(self) -> int:
        return self.states.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> DocStates:
        values = None if self.values is None else self.values.to(device=device, dtype=dtype)
        return DocStates(self.states.to(device=device, dtype=dtype), self.mask.to(device=device), values)

    def select(self, index) -> DocStates:
        """Some documents of the batch, trimmed to their longest."""
        mask = self.mask[index]
        width = max(int(mask.sum(-1).max()) + 1, 1) if mask.numel() else 1
        width = min(width, mask.shape[-1])
        values = None if self.values is None else self.values[index][:, :width]
        return DocStates(self.states[index][:, :, :width], mask[:, :width], values)

    @staticmethod
    def cat(parts: Sequence[DocStates]) -> DocStates:
        """Concatenate batches of different widths (zero-padded to the widest)."""
        width = max(p.mask.shape[1] for p in parts)
        pad = torch.nn.functional.pad
        states = [pad(p.states, (0, 0, 0, width - p.mask.shape[1])) for p in parts]
        masks = [pad(p.mask, (0, width - p.mask.shape[1])) for p in parts]
        values = None
        if parts[0].values is not None:
            values = torch.cat([pad(p.values, (0, 0, 0, width - p.mask.shape[1])) for p in parts])
        return DocStates(torch.cat(states), torch.cat(masks), values)


class DocumentEncoder(Protocol):
    """Anything that turns texts into the hypernetwork's input: vectors [n, dim] or DocStates."""

    id: str
    dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor | DocStates:  # float32 on CPU
        ...


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether `device` multiplies bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence looked up
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolve_compute_dtype(name: str, device: torch.device | str | None = None) -> str:
    """"float32" or "bfloat16": `name`, with "auto" decided for `device` (default: cuda if present, else cpu)."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype {name!r} is not one of {COMPUTE_DTYPES}")
    if name != "auto":
        return name
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return "bfloat16" if native_bf16(device) else "float32"


def base_pass_precision(compute_dtype: str, device: torch.device | str):
    """The context the frozen base pass runs in: nothing for float32, bf16 autocast for bfloat16."""
    if resolve_compute_dtype(compute_dtype, device) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def encoder_id(spec: EncoderSpec, base_model: str | None = None, device: torch.device | str | None = None) -> str:
    """The cache key of an encoder, known without loading it (an 'llm' encoder is named by its base model;
    a bf16 base pass adds its precision, since its states differ from float32's)."""
    if spec.kind == "sentence":
        from hyperprag.core.embedders import MINILM_NAME

        return f"sentence:{MINILM_NAME}"
    if base_model is None:
        raise ValueError("the id of an 'llm' encoder needs the base model's name")
    precision = resolve_compute_dtype(spec.compute_dtype, device)
    suffix = "" if precision == "float32" else f":{precision}"
    if spec.kind == "tokens":
        return f"tokens:{base_model}:{spec.token_states}:{spec.max_length}{suffix}"
    return f"llm:{base_model}:layer{spec.layer}:{spec.pooling}:{spec.max_length}{suffix}"


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalized)."""

    def __init__(self, device: str = "cpu"):
        from hyperprag.core.embedders import MINILM_DIM, load_sentence_encoder

        self.model = load_sentence_encoder(device)
        self.id = encoder_id(EncoderSpec(kind="sentence"))
        self.dim = MINILM_DIM

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        from hyperprag.core.embedders import encode_texts

        return torch.from_numpy(encode_texts(self.model, list(texts), batch_size=max(1, len(texts))))


class LLMEncoder:
    """Pooled hidden states of a (frozen) causal LM at `layer` (index into hidden_states, -1 = last)."""

    def __init__(self, model, tokenizer, layer: int = -1, pooling: str = "mean", max_length: int = 512,
                 compute_dtype: str = "float32"):
        from hyperprag.core.models import model_id

        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        n_layers = model.config.get_text_config().num_hidden_layers
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(f"layer {layer} out of range for a model with {n_layers} layers (0..{n_layers}, or -1)")
        self.model, self.tokenizer = model, tokenizer
        self.layer, self.pooling, self.max_length = layer, pooling, max_length
        self.dim = int(model.config.get_text_config().hidden_size)
        device = next(model.parameters()).device
        self.compute_dtype = resolve_compute_dtype(compute_dtype, device)
        self.id = encoder_id(EncoderSpec(kind="llm", layer=layer, pooling=pooling, max_length=max_length,
                                         compute_dtype=self.compute_dtype), model_id(model))

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                             max_length=self.max_length).to(device)
        mask = enc["attention_mask"]  # [n, t]
        with base_pass_precision(self.compute_dtype, device):
            out = self.model.get_decoder()(input_ids=enc["input_ids"], attention_mask=mask,
                                           position_ids=_position_ids(mask),
                                           output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[self.layer].float()  # [n, t, h]
        if self.pooling == "mean":
            w = mask.unsqueeze(-1).float()
            pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
        else:  # the last real token: the highest position with mask 1 (left or right padding)
            idx = (mask * torch.arange(mask.shape[1], device=device)).argmax(-1)  # [n]
            pooled = hidden[torch.arange(hidden.shape[0], device=device), idx]
        return pooled.cpu()  # [n, h]


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp_min(0)  # real tokens from 0, whatever the padding side


class TokenStateEncoder:
    """The frozen base model's token states at the input of every adapted layer (`DocStates`), no gradients.

    Entry l of the states is hidden_states[layer_l]: the residual stream entering the l-th adapted layer,
    the space that layer's FFN reads (after its norm).
    """

    def __init__(self, model, tokenizer, layers: Sequence[int] | None = None, max_length: int = 512,
                 dtype: torch.dtype = torch.float32, token_states: str = "residual",
                 compute_dtype: str = "float32"):
        from hyperprag.core.models import model_id

        text = model.config.get_text_config()
        n_layers = text.num_hidden_layers
        self.layers = list(range(n_layers)) if layers is None else [int(i) for i in layers]
        if any(not 0 <= i < n_layers for i in self.layers):
            raise ValueError(f"layers {self.layers} out of range for a model with {n_layers} layers")
        if token_states not in TOKEN_STATES:
            raise ValueError(f"token_states {token_states!r} is not one of {TOKEN_STATES}")
        self.model, self.tokenizer, self.max_length, self.dtype = model, tokenizer, max_length, dtype
        self.token_states = token_states
        self.dim = int(text.hidden_size if token_states == "residual" else text.intermediate_size)
        self.compute_dtype = resolve_compute_dtype(compute_dtype, next(model.parameters()).device)
        self.id = encoder_id(EncoderSpec(kind="tokens", max_length=max_length, token_states=token_states,
                                         compute_dtype=self.compute_dtype), model_id(model))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Right-padded document tokens (input_ids, attention_mask [n, T]), as `states` takes them."""
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "right"
        try:
            return dict(self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                                       max_length=self.max_length))
        finally:
            self.tokenizer.padding_side = side

    @torch.no_grad()
    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DocStates:
        """DocStates of tokenized documents, on the model's device."""
        with base_pass_precision(self.compute_dtype, input_ids.device):
            if self.token_states == "memory":
                return self._memory(input_ids, attention_mask)
            out = self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                           position_ids=_position_ids(attention_mask), output_hidden_states=True,
                                           use_cache=False)
        states = torch.stack([out.hidden_states[i] for i in self.layers], dim=1)  # [n, L, T, H]
        return DocStates(states.to(self.dtype), attention_mask)

    def _memory(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DocStates:
        """down_proj inputs of every adapted layer (forward pre-hooks) and the next token's embedding."""
        from hyperprag.core.lora import LoraSpec, find_targets

        found: dict[int, torch.Tensor] = {}
        mods = find_targets(self.model, LoraSpec(target_modules=("down_proj",), layers=tuple(self.layers)))
        handles = [mod.register_forward_pre_hook(lambda _m, inp, i=i: found.__setitem__(i, inp[0]))
                   for i, (_, mod) in enumerate(mods["down_proj"])]
        try:
            self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                     position_ids=_position_ids(attention_mask), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        states = torch.stack([found[i] for i in range(len(handles))], dim=1)  # [n, L, T, I]
        embeddings = self.model.get_input_embeddings()(input_ids)  # [n, T, E]
        values = torch.nn.functional.pad(embeddings[:, 1:], (0, 0, 0, 1))  # position t holds token t+1's
        followed = attention_mask * torch.nn.functional.pad(attention_mask[:, 1:], (0, 1))
        return DocStates(states.to(self.dtype), followed, values.to(self.dtype))

    def encode(self, texts: Sequence[str]) -> DocStates:
        device = next(self.model.parameters()).device
        enc = self.tokenize(texts)
        docs = self.states(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        return docs.to("cpu", torch.float32)


def build_encoder(spec: EncoderSpec, model=None, tokenizer=None, device: str = "cpu",
                  layers: Sequence[int] | None = None) -> DocumentEncoder:
    """The encoder `spec` describes; LLM encoders need the (already loaded) base model and tokenizer.

    `layers`: the adapted layers whose inputs a "tokens" encoder returns (None = every layer).
    """
    if spec.kind == "sentence":
        return SentenceEncoder(device)
    if model is None or tokenizer is None:
        raise ValueError(f"an {spec.kind!r} encoder needs the base model and its tokenizer")
    if spec.kind == "tokens":
        return TokenStateEncoder(model, tokenizer, layers=layers, max_length=spec.max_length,
                                 token_states=spec.token_states, compute_dtype=spec.compute_dtype)
    return LLMEncoder(model, tokenizer, layer=spec.layer, pooling=spec.pooling, max_length=spec.max_length,
                      compute_dtype=spec.compute_dtype)


def encoder_dim(spec: EncoderSpec, base_config=None) -> int:
    """Input width without loading anything: 384 for MiniLM, the base model's hidden size for 'llm'/'tokens'."""
    if spec.kind == "sentence":
        from hyperprag.core.embedders import MINILM_DIM

        return MINILM_DIM
    if base_config is None:
        raise ValueError(f"the width of an {spec.kind!r} encoder needs the base model's config")
    text = base_config.get_text_config()
    return int(text.intermediate_size if spec.token_states == "memory" else text.hidden_size)


def encode_documents(encoder: DocumentEncoder, texts: Sequence[str], batch_size: int = 16
                     ) -> torch.Tensor | DocStates:
    """Encoder inputs of `texts` in order (embeddings [n, d] or DocStates; float32, CPU), a batch at a time."""
    texts = list(texts)
    if not texts:
        return torch.zeros(0, encoder.dim)
    # Sort by length so each batch pads little; restore the input order at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks = [encoder.encode([texts[i] for i in order[s:s + batch_size]]) for s in range(0, len(texts), batch_size)]
    inverse = torch.empty(len(texts), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(texts))
    if isinstance(chunks[0], DocStates):
        return DocStates.cat(chunks).select(inverse)
    return torch.cat([c.float() for c in chunks])[inverse]


def _slug(enc_id: str) -> str:
    short = re.sub(r"[^A-Za-z0-9_.-]+", "_", enc_id)[:80]
    return f"{short}-{hashlib.sha256(enc_id.encode()).hexdigest()[:8]}"


class EmbeddingCache:
    """Embeddings by (encoder id, content hash), one safetensors file per encoder under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, enc_id: str) -> Path:
        return self.root / f"{_slug(enc_id)}.safetensors"

    def load(self, enc_id: str) -> dict[str, torch.Tensor]:
        path = self.path(enc_id)
        return load_file(str(path)) if path.exists() else {}

    def lookup(self, enc_id: str, keys: Sequence[str]) -> torch.Tensor | None:
        """Embeddings [n, d] if every key is cached, else None (so the encoder need not be loaded)."""
        cached = self.load(enc_id)
        if not keys or any(k not in cached for k in keys):
            return None
        return torch.stack([cached[k] for k in keys])

    def get_or_compute(self, encoder: DocumentEncoder, keys: Sequence[str], texts: Sequence[str],
                       batch_size: int = 16) -> torch.Tensor:
        """Embeddings [n, d] of `texts` (cached under `keys`, e.g. Document.content_hash); encodes only misses."""
        if len(keys) != len(texts):
            raise ValueError(f"{len(keys)} keys but {len(texts)} texts")
        cached = self.load(encoder.id)
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in cached}
        if missing:
            new = encode_documents(encoder, list(missing.values()), batch_size)
            cached.update({k: new[i].contiguous() for i, k in enumerate(missing)})
            data = save(cached, metadata={"encoder_id": encoder.id, "dim": str(encoder.dim)})
            atomic_write_bytes(self.path(encoder.id), data)
        return torch.stack([cached[k] for k in keys]) if keys else torch.zeros(0, encoder.dim)


def cached_embeddings(encoder: DocumentEncoder, keys: Sequence[str], texts: Sequence[str],
                      cache_dir: str | Path | None, batch_size: int = 16) -> torch.Tensor:
    """`EmbeddingCache(cache_dir).get_or_compute(...)`, or plain encoding when `cache_dir` is None."""
    if cache_dir is None:
        return encode_documents(encoder, texts, batch_size)
    return EmbeddingCache(cache_dir).get_or_compute(encoder, keys, texts, batch_size)
