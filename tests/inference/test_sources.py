"""Adapter sources: a store read by id or by content, with a zero adapter, a fallback or a clear error for
documents it lacks; the on-the-fly source's documented cache."""

from __future__ import annotations

import pytest
import torch

from hyperprag.core.data import Document
from hyperprag.core.lora import LoraSpec, LoraWeights
from hyperprag.core.store import AdapterStore, MissingAdapterError
from inference.sources import StoreSource

SPEC = LoraSpec(rank=2, alpha=32, target_modules=("up_proj",))
DOCS = [Document(f"d{i}", f"Title {i}", f"Text {i}.") for i in range(3)]


def _adapter(value: float) -> LoraWeights:
    return LoraWeights({"up_proj": torch.full((1, 2, 4), value)}, {"up_proj": torch.full((1, 4, 2), value)})


@pytest.fixture
def store(tmp_path) -> AdapterStore:
    """d0 and d1 stored under other ids, with the content hash `teach` records; d2 is not stored."""
    st = AdapterStore.create(tmp_path / "store", "tiny", SPEC)
    for i, d in enumerate(DOCS[:2]):
        st.put(f"corpus-{i}", _adapter(i + 1.0), {"content_hash": d.content_hash})
    st.flush()
    return st


def test_documents_are_found_by_content_when_ids_differ(store):
    source = StoreSource(store, {d.id: d for d in DOCS})
    assert "d1" in source and "d2" not in source and source.stored_id("d0") == "corpus-0"
    got = source.get_many(["d1", "d0", "d1"])
    assert [float(w.A["up_proj"][0, 0, 0]) for w in got] == [2.0, 1.0, 2.0]
    assert store.id_for_content(DOCS[1].content_hash) == "corpus-1" and store.id_for_content("nope") is None


def test_a_missing_document_raises_one_line_or_answers_with_zero_or_falls_back(store):
    corpus = {d.id: d for d in DOCS}
    with pytest.raises(MissingAdapterError, match=r"^document 'd2' \('Title 2'\) has no adapter in store .*--corpus"):
        StoreSource(store, corpus).get_many(["d0", "d2"])
    zero = StoreSource(store, corpus, on_missing="zero")
    w = zero.get_many(["d2", "d0"])
    assert zero.missing == {"d2"} and not w[0].A["up_proj"].any() and w[1].A["up_proj"].eq(1.0).all()

    class Fallback:
        spec = SPEC
        asked: list[str] = []

        def get_many(self, ids):
            self.asked.extend(ids)
            return [_adapter(9.0) for _ in ids]

    fallback = Fallback()
    got = StoreSource(store, corpus, on_missing=fallback).get_many(["d2", "d1"])
    assert fallback.asked == ["d2"] and [float(x.A["up_proj"].flatten()[0]) for x in got] == [9.0, 2.0]


def test_on_the_fly_cache_remembers_forgets_and_evicts_the_oldest(monkeypatch):
    from types import SimpleNamespace

    import inference.parameterize as parameterize

    made: list[str] = []

    def generate_adapters(hyper, encoder, docs):  # stands in for the hypernetwork: one new adapter per call
        made.extend(d.id for d in docs)
        return [_adapter(float(len(made))) for _ in docs]

    monkeypatch.setattr(parameterize, "generate_adapters", generate_adapters)
    source = parameterize.OnTheFlySource(SimpleNamespace(spec=SPEC), None, {d.id: d for d in DOCS}, cache_size=2)
    first = source.get_many(["d0", "d1", "d0"])
    assert made == ["d0", "d1"] and first[0] is first[2] and list(source.cache) == ["d1", "d0"]
    assert source.get_many(["d1"])[0] is first[1] and made == ["d0", "d1"]  # cached: nothing generated
    source.remember("d2", _adapter(7.0))
    assert list(source.cache) == ["d1", "d2"]  # d0 was the least recently used
    source.forget("d1")
    assert source.get_many(["d1"])[0] is not first[1] and made == ["d0", "d1", "d1"]  # generated anew
