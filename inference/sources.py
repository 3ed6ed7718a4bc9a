"""Adapter sources: where the adapters of a question's documents come from, behind one small protocol.

The family:

* `StoreSource` (here): an adapter store (teacher LoRAs from `hyperprag teach`, or generated ones from
  `hyperprag parameterize`) seen through the corpus being answered from. A document the store does not
  hold under its id is found by its content (the content hash the store records), so passages pooled from
  a question file find the adapters `teach` made from the corpus file. A document still missing raises a
  one-line error, answers with a zero adapter (the plain model; counted in `missing`), or is handed to a
  fallback source.
* `OnTheFlySource` (inference/parameterize.py): runs the hypernetwork at question time. It keeps an LRU
  cache of generated adapters by document id; `remember` puts adapters made elsewhere (e.g. a batched
  `parameterize` call) into it and `forget` drops one whose document changed.

An `AdapterStore` itself also satisfies the protocol (ids only, no content lookup).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from hyperprag.core.compose import zero_like
from hyperprag.core.data import Document
from hyperprag.core.lora import LoraSpec, LoraWeights
from hyperprag.core.store import AdapterStore, MissingAdapterError


class AdapterSource(Protocol):
    """Anything that returns one adapter per document id, all with one LoRA spec."""

    spec: LoraSpec

    def get_many(self, doc_ids: Sequence[str]) -> list[LoraWeights]: ...


class StoreSource:
    """A store's adapters for the documents of `corpus` (by id, else by content), on `device`.

    `on_missing`: "raise" (a MissingAdapterError naming the document and the store), "zero" (a zero adapter,
    i.e. the plain model, for a document whose training failed; its id is added to `missing`), or another
    source to generate what the store lacks (a hypernetwork on the fly).
    """

    def __init__(self, store: AdapterStore, corpus: Mapping[str, Document] | None = None, device: str = "cpu",
                 on_missing: Literal["raise", "zero"] | AdapterSource = "raise"):
        self.store, self.spec, self.device = store, store.spec, device
        self.corpus = corpus if corpus is not None else {}
        self.on_missing = on_missing
        self.missing: set[str] = set()
        self._zero: LoraWeights | None = None

    def stored_id(self, doc_id: str) -> str | None:
        """The id the store holds this document's adapter under: its own, or that of the same content."""
        if doc_id in self.store:
            return doc_id
        doc = self.corpus.get(doc_id)
        return None if doc is None else self.store.id_for_content(doc.content_hash)

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.stored_id(doc_id) is not None

    def get_many(self, doc_ids: Sequence[str]) -> list[LoraWeights]:
        stored = {i: s for i in dict.fromkeys(doc_ids) if (s := self.stored_id(i)) is not None}
        rest = [i for i in dict.fromkeys(doc_ids) if i not in stored]
        made = dict(zip(rest, self._missing(rest), strict=True))
        return [self.store.get(stored[i], device=self.device) if i in stored else made[i] for i in doc_ids]

    def _missing(self, doc_ids: list[str]) -> list[LoraWeights]:
        if not doc_ids:
            return []
        if self.on_missing == "zero":
            self.missing.update(doc_ids)
            return [self._zero_adapter()] * len(doc_ids)
        if self.on_missing == "raise":
            first = doc_ids[0]
            doc = self.corpus.get(first)
            what = f"document {first!r}" + (f" ({doc.title!r})" if doc is not None and doc.title else "")
            raise MissingAdapterError(
                f"{what} has no adapter in store {self.store.root}, neither under its id nor by its content "
                f"({len(doc_ids)} such documents); answer from the corpus the store was made from (--corpus)")
        return self.on_missing.get_many(doc_ids)

    def _zero_adapter(self) -> LoraWeights:
        if self._zero is None:
            self._zero = zero_like(self.store.get(self.store.ids()[0], device=self.device), self.spec.rank)
        return self._zero


def as_source(source: AdapterStore | AdapterSource | None, corpus: Mapping[str, Document]) -> AdapterSource | None:
    """A store as a StoreSource over `corpus` (so its documents are found by content too); a source as is."""
    return StoreSource(source, corpus) if isinstance(source, AdapterStore) else source
