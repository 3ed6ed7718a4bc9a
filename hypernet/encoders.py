"""Document encoders (the hypernetwork's input) and an on-disk cache of their embeddings.

* `SentenceEncoder`: the bundled all-MiniLM-L6-v2 (384-d, unit norm), via hyperprag.core.embedders.
* `LLMEncoder`: the base LLM's own hidden states at one layer, mean- or last-token-pooled over real
  tokens (DyPRAG uses the LLM's last token), batched, padding-side agnostic, without gradients.

`EmbeddingCache` stores one safetensors file per encoder id, keyed by each document's content hash, so a
training corpus is encoded once and reused by every run (and every DDP rank) with that encoder.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save

from hypernet.config import EncoderSpec
from hyperprag.core.io import atomic_write_bytes


class DocumentEncoder(Protocol):
    """Anything that turns texts into fixed-size vectors."""

    id: str
    dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor:  # [n, dim] float32 on CPU
        ...


def encoder_id(spec: EncoderSpec, base_model: str | None = None) -> str:
    """The cache key of an encoder, known without loading it (an 'llm' encoder is named by its base model)."""
    if spec.kind == "sentence":
        from hyperprag.core.embedders import MINILM_NAME

        return f"sentence:{MINILM_NAME}"
    if base_model is None:
        raise ValueError("the id of an 'llm' encoder needs the base model's name")
    return f"llm:{base_model}:layer{spec.layer}:{spec.pooling}:{spec.max_length}"


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

    def __init__(self, model, tokenizer, layer: int = -1, pooling: str = "mean", max_length: int = 512):
        from hyperprag.core.models import model_id

        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        n_layers = model.config.get_text_config().num_hidden_layers
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(f"layer {layer} out of range for a model with {n_layers} layers (0..{n_layers}, or -1)")
        self.model, self.tokenizer = model, tokenizer
        self.layer, self.pooling, self.max_length = layer, pooling, max_length
        self.dim = int(model.config.get_text_config().hidden_size)
        self.id = encoder_id(EncoderSpec(kind="llm", layer=layer, pooling=pooling, max_length=max_length),
                             model_id(model))

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                             max_length=self.max_length).to(device)
        mask = enc["attention_mask"]  # [n, t]
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)  # real tokens from 0, whatever the padding side
        out = self.model.get_decoder()(input_ids=enc["input_ids"], attention_mask=mask, position_ids=position_ids,
                                       output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[self.layer].float()  # [n, t, h]
        if self.pooling == "mean":
            w = mask.unsqueeze(-1).float()
            pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
        else:  # the last real token: the highest position with mask 1 (left or right padding)
            idx = (mask * torch.arange(mask.shape[1], device=device)).argmax(-1)  # [n]
            pooled = hidden[torch.arange(hidden.shape[0], device=device), idx]
        return pooled.cpu()  # [n, h]


def build_encoder(spec: EncoderSpec, model=None, tokenizer=None, device: str = "cpu") -> DocumentEncoder:
    """The encoder `spec` describes; an LLM encoder needs the (already loaded) base model and tokenizer."""
    if spec.kind == "sentence":
        return SentenceEncoder(device)
    if model is None or tokenizer is None:
        raise ValueError("an 'llm' encoder needs the base model and its tokenizer")
    return LLMEncoder(model, tokenizer, layer=spec.layer, pooling=spec.pooling, max_length=spec.max_length)


def encoder_dim(spec: EncoderSpec, base_config=None) -> int:
    """Embedding width without loading anything: 384 for MiniLM, the base model's hidden size for 'llm'."""
    if spec.kind == "sentence":
        from hyperprag.core.embedders import MINILM_DIM

        return MINILM_DIM
    if base_config is None:
        raise ValueError("the width of an 'llm' encoder needs the base model's config")
    return int(base_config.get_text_config().hidden_size)


def encode_documents(encoder: DocumentEncoder, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """Embeddings [n, d] (float32, CPU) of `texts`, `batch_size` at a time."""
    texts = list(texts)
    if not texts:
        return torch.zeros(0, encoder.dim)
    # Sort by length so each batch pads little; restore the input order at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks = [encoder.encode([texts[i] for i in order[s:s + batch_size]]).float()
              for s in range(0, len(texts), batch_size)]
    out = torch.empty(len(texts), chunks[0].shape[1])
    out[torch.tensor(order)] = torch.cat(chunks)
    return out


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
