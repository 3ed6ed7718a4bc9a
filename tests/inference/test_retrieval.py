"""Retrievers find the right document on a hand corpus, round-trip through disk, and fail clearly."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest

from hyperprag.core.data import (
    Document,
    corpus_index,
    load_corpus,
    load_questions,
    pool_corpus,
    supporting_ids,
)
from inference.retrieval import (
    BM25Retriever,
    DenseRetriever,
    Retriever,
    RetrieverError,
    build_retriever,
    load_retriever,
    recall_at_k,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"

# query -> the one document that answers it (the hand corpus has one topic per document)
KNOWN = {
    "Which village did the eruption of Mount Fennick bury?": "d-volcano",
    "Who founded the Aarvik String Quartet?": "d-violin",
    "Which engineer designed the suspension bridge over the Skell?": "d-bridge",
    "How long is Orvel cheese aged in caves?": "d-cheese",
    "Who discovered Comet Ispar?": "d-comet",
    "What do copper leaf beetles eat?": "d-beetle",
    "Where did the SS Marigold sink?": "d-ship",
    "In which chess opening does white sacrifice a knight?": "d-chess",
}


def shared_data() -> Path | None:
    """../shared/data beside the checkout (CI and dev machines), or $HYPERPRAG_SHARED_DATA."""
    env = os.environ.get("HYPERPRAG_SHARED_DATA")
    path = Path(env) if env else Path(__file__).parents[2] / "../shared/data"
    return path.resolve() if path.is_dir() else None


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return list(load_corpus(FIXTURES / "corpus.jsonl"))


@pytest.fixture(scope="module")
def bm25(docs) -> BM25Retriever:
    return BM25Retriever.build(docs)


def test_recall_at_k_hand_values():
    assert recall_at_k(["a", "b", "c"], ["b"]) == 1.0
    assert recall_at_k(["a", "b", "c"], ["b", "z"]) == 0.5
    assert recall_at_k(["a", "b", "c"], ["c"], k=2) == 0.0
    assert recall_at_k([("a", 3.0), ("c", 1.0)], ["a", "c", "d", "e"]) == 0.5
    assert recall_at_k([], ["a"]) == 0.0
    with pytest.raises(ValueError):
        recall_at_k(["a"], [])


def test_bm25_finds_the_known_document(bm25, docs):
    assert isinstance(bm25, Retriever)
    hits = bm25.search(list(KNOWN), k=3)
    assert len(hits) == len(KNOWN) and all(len(h) == 3 for h in hits)
    assert [h[0][0] for h in hits] == list(KNOWN.values())
    for h in hits:
        scores = [s for _, s in h]
        assert scores == sorted(scores, reverse=True) and scores[0] > 0
        assert len({i for i, _ in h}) == 3


def test_search_edge_cases(bm25, docs):
    assert bm25.search([], 3) == []
    assert len(bm25.search(["Comet Ispar"], 50)[0]) == len(docs)  # k capped at the corpus size
    assert bm25.search(["Comet Ispar"], 0) == [[]]
    assert len(bm25.search(["qqqq zzzz"], 2)[0]) == 2  # no overlap still gives k (zero-score) results
    with pytest.raises(TypeError):
        bm25.search("Comet Ispar", 1)
    with pytest.raises(ValueError, match="duplicate document id"):
        BM25Retriever.build([docs[0], docs[0]])
    with pytest.raises(ValueError, match="empty corpus"):
        build_retriever("bm25", [])
    with pytest.raises(ValueError, match="unknown retriever kind"):
        build_retriever("splade", docs)


def test_bm25_save_load_round_trip(bm25, tmp_path):
    bm25.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["kind"] == "bm25" and meta["n_docs"] == 8
    for loaded in (BM25Retriever.load(tmp_path / "idx"), load_retriever(tmp_path / "idx")):
        assert isinstance(loaded, BM25Retriever)
        assert loaded.search(list(KNOWN), 4) == bm25.search(list(KNOWN), 4)
    bm25.save(tmp_path / "idx")  # saving over an existing index works
    assert load_retriever(tmp_path / "idx").ids == bm25.ids


def test_load_errors_are_clear(bm25, tmp_path):
    with pytest.raises(RetrieverError, match="folder missing"):
        load_retriever(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RetrieverError, match="no meta.json"):
        load_retriever(tmp_path / "empty")
    d = tmp_path / "idx"
    bm25.save(d)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(RetrieverError, match="corrupt"):
        load_retriever(d)
    (d / "meta.json").write_text(json.dumps({"kind": "splade"}))
    with pytest.raises(RetrieverError, match="'kind' must be one of"):
        load_retriever(d)
    bm25.save(d)
    with pytest.raises(RetrieverError, match="not 'dense'"):
        DenseRetriever.load(d)
    (d / "ids.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(RetrieverError, match="ids.json"):
        load_retriever(d)
    bm25.save(d)
    (d / "bm25" / "vocab.index.json").unlink()
    with pytest.raises(RetrieverError, match="cannot load the BM25 index"):
        load_retriever(d)


@pytest.mark.slow
def test_dense_finds_the_known_document_and_round_trips(docs, tmp_path):
    from hyperprag.core.embedders import encode_texts, load_sentence_encoder

    enc = load_sentence_encoder()
    assert load_sentence_encoder() is enc  # cached per process
    emb = encode_texts(enc, ["a cat", "a dog", "stock markets"], batch_size=2)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]  # cat is closer to dog than to stock markets
    assert encode_texts(enc, []).shape == (0, 384)

    dense = build_retriever("dense", docs)
    assert isinstance(dense, DenseRetriever) and dense.index.ntotal == 8
    hits = dense.search(list(KNOWN), k=3)
    assert [h[0][0] for h in hits] == list(KNOWN.values())
    assert all(-1.0 <= s <= 1.0 + 1e-5 for h in hits for _, s in h)
    dense.save(tmp_path / "dense")
    loaded = load_retriever(tmp_path / "dense")
    assert isinstance(loaded, DenseRetriever)
    assert loaded.search(list(KNOWN), 3) == hits
    (tmp_path / "dense" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(RetrieverError, match="index.faiss"):
        load_retriever(tmp_path / "dense")


@pytest.mark.skipif(shared_data() is None, reason="../shared/data not present")
def test_bm25_recall_on_hotpotqa():
    qs = list(load_questions(shared_data() / "hotpotqa" / "test.jsonl"))[:50]
    docs = pool_corpus(qs)
    index = corpus_index(docs)
    hits = BM25Retriever.build(docs).search([q.question for q in qs], k=3)
    recall = statistics.mean(recall_at_k(h, supporting_ids(q, index)) for h, q in zip(hits, qs, strict=True))
    assert recall > 0.3  # measured 0.59 (0.66 on all 500)
