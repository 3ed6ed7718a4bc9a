"""Instant parameterization: documents -> adapters with one hypernetwork forward per batch.

Two ways to use a trained hypernetwork: `parameterize_corpus` writes every document's adapter into an
`AdapterStore` (the same format the teacher writes, so every downstream command takes either), and
`OnTheFlySource` generates adapters at question time with no store at all.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hypernet.checkpoint import LoadedHypernet, load_hypernet
from hypernet.encoders import DocumentEncoder, build_encoder
from hyperprag.core.data import Document
from hyperprag.core.lora import LoraWeights, target_shapes
from hyperprag.core.models import model_id
from hyperprag.core.shards import parse_shard, shard_of

log = logging.getLogger(__name__)


def load_for_model(folder: str | Path, base, tokenizer, compute_dtype: str | None = None
                   ) -> tuple[LoadedHypernet, DocumentEncoder]:
    """Load a hypernetwork checked against `base` (name, LoRA shapes) and build its document encoder.

    `compute_dtype` overrides the precision of the encoder's base pass the checkpoint records (None keeps it).
    """
    doc_spec = load_hypernet(folder).spec  # read the spec first to compute the base model's shapes for it
    hyper = load_hypernet(folder, expect_base_model=model_id(base), expect_shapes=target_shapes(base, doc_spec))
    if compute_dtype is not None:
        hyper.encoder = replace(hyper.encoder, compute_dtype=compute_dtype)
    encoder = build_encoder(hyper.encoder, base, tokenizer, layers=hyper.spec.layers)
    if hasattr(encoder, "compute_dtype"):  # record "auto" as it was decided on this machine
        hyper.encoder = replace(hyper.encoder, compute_dtype=encoder.compute_dtype)
    return hyper, encoder


def unbatch(weights: LoraWeights) -> list[LoraWeights]:
    """Split a batched set [b, ...] into b unbatched adapters (views, no copies)."""
    n = next(iter(weights.A.values())).shape[0]
    return [weights.select(i) for i in range(n)]


@dataclass
class Timing:
    """Where parameterization time goes, in seconds."""

    encode: float = 0.0
    generate: float = 0.0
    write: float = 0.0

    @property
    def total(self) -> float:
        return self.encode + self.generate + self.write


def generate_adapters(hyper: LoadedHypernet, encoder: DocumentEncoder, docs: Sequence[Document],
                      batch_size: int = 32, timing: Timing | None = None) -> list[LoraWeights]:
    """Adapters for `docs`, in order: documents of similar length are encoded together (little padding),
    then one hypernetwork forward per batch."""
    timing = timing if timing is not None else Timing()
    order = sorted(range(len(docs)), key=lambda i: len(docs[i].full_text))
    out: list[LoraWeights | None] = [None] * len(docs)
    for start in range(0, len(docs), batch_size):
        batch = order[start:start + batch_size]
        t0 = time.perf_counter()
        inputs = encoder.encode([docs[i].full_text for i in batch])  # [b, d] or DocStates [b, L, T, H]
        t1 = time.perf_counter()
        for i, weights in zip(batch, unbatch(hyper.generate(inputs)), strict=True):
            out[i] = weights
        timing.encode += t1 - t0
        timing.generate += time.perf_counter() - t1
    return out


class OnTheFlySource:
    """Adapter source that runs the hypernetwork at question time (no store), with an LRU cache of the
    last `cache_size` adapters by document id (inference/sources.py: the adapter-source family)."""

    def __init__(self, hyper: LoadedHypernet, encoder: DocumentEncoder, corpus: dict[str, Document],
                 cache_size: int = 4096):
        self.hyper, self.encoder, self.corpus = hyper, encoder, corpus
        self.spec = hyper.spec
        self.cache: OrderedDict[str, LoraWeights] = OrderedDict()
        self.cache_size = cache_size

    @classmethod
    def from_checkpoint(cls, folder: str | Path, base, tokenizer, docs: Sequence[Document]) -> OnTheFlySource:
        hyper, encoder = load_for_model(folder, base, tokenizer)
        return cls(hyper, encoder, {d.id: d for d in docs})

    def remember(self, doc_id: str, weights: LoraWeights) -> None:
        """Cache an adapter generated for `doc_id` (most recently used; the oldest beyond cache_size go)."""
        self.cache[doc_id] = weights
        self.cache.move_to_end(doc_id)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def forget(self, doc_id: str) -> None:
        """Drop a cached adapter (its document's text changed), so the next request generates it anew."""
        self.cache.pop(doc_id, None)

    def get_many(self, doc_ids: Sequence[str]) -> list[LoraWeights]:
        missing = [i for i in dict.fromkeys(doc_ids) if i not in self.cache]
        made = dict(zip(missing, generate_adapters(self.hyper, self.encoder, [self.corpus[i] for i in missing]),
                        strict=True)) if missing else {}
        out = [made[i] if i in made else self.cache[i] for i in doc_ids]
        for i, w in zip(doc_ids, out, strict=True):  # in use order: the last one used is the most recent
            self.remember(i, w)
        return out


def parameterize_corpus(hypernet: str | Path, docs: Sequence[Document], store: str | Path, base, tokenizer,
                        batch_size: int = 32, shard: str = "0/1", store_dtype: str = "float32",
                        progress: bool = True, compute_dtype: str | None = None) -> dict:
    """Write a generated adapter for every document of `docs` (this shard's part) into `store`; resumable.

    Documents already in the store are skipped, so a killed run continues where it stopped. Returns
    counts and a time breakdown (encode / generate / write) with docs/s. `compute_dtype`: as in
    `load_for_model`.
    """
    from hyperprag.core.store import AdapterStore

    index, count = parse_shard(shard)
    hyper, encoder = load_for_model(hypernet, base, tokenizer, compute_dtype)
    settings = {"source": "hypernet", "hypernet": str(hypernet), "encoder": hyper.encoder.to_dict(),
                "hypernet_config": hyper.config.to_dict()}
    st = AdapterStore.create(store, model_id(base), hyper.spec, settings, dtype=store_dtype)
    mine = [d for d in docs if shard_of(d.id, count) == index]
    todo = sorted((d for d in mine if d.id not in st), key=lambda d: len(d.full_text))  # batches pad little
    timing = Timing()
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc="parameterize", unit="doc",
               disable=not progress, dynamic_ncols=True)
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            adapters = generate_adapters(hyper, encoder, chunk, batch_size, timing)
            t0 = time.perf_counter()
            for d, w in zip(chunk, adapters, strict=True):
                st.put(d.id, w, {"content_hash": d.content_hash})  # found by content, too
            st.flush()  # one shard per batch: a kill loses at most the batch in flight
            timing.write += time.perf_counter() - t0
            bar.update(len(chunk))
            bar.set_postfix(docs_per_s=f"{(start + len(chunk)) / max(timing.total, 1e-9):.1f}")
    bar.close()
    done = len(todo)
    stats = {"documents": len(mine), "generated": done, "skipped_existing": len(mine) - len(todo),
             "seconds": timing.total, "docs_per_s": done / timing.total if timing.total else None,
             "encode_s": timing.encode, "generate_s": timing.generate, "write_s": timing.write}
    log.info("parameterized %d documents (%d already stored) in %.2fs", done, len(mine) - len(todo), timing.total)
    return stats
