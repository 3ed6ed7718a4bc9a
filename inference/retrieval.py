"""Top-k document retrieval: BM25 (bm25s) and dense MiniLM + faiss, with on-disk indexes and recall@k."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hyperprag.core.data import Document
from hyperprag.core.errors import InputError
from hyperprag.core.io import atomic_write_json

META = "meta.json"
IDS = "ids.json"
FORMAT_VERSION = 1
Hits = list[list[tuple[str, float]]]  # per query: (doc id, score), best first



def _checked_query(queries: list[str], k: int, n_docs: int) -> tuple[list[str], int]:
    """The queries as a list and k capped at the corpus size (0 when there is nothing to search)."""
    if isinstance(queries, str):
        raise TypeError("search takes a list of queries")
    queries = list(queries)
    return queries, min(int(k), n_docs) if queries else 0

class RetrieverError(InputError, ValueError):
    """A retriever folder that is missing, incomplete or not ours; the message names the folder."""


@runtime_checkable
class Retriever(Protocol):
    """What answering needs from any retriever: batched top-k search and a folder on disk."""

    kind: str
    ids: list[str]

    def search(self, queries: list[str], k: int) -> Hits: ...

    def save(self, dir: str | Path) -> None: ...

    @classmethod
    def load(cls, dir: str | Path) -> Retriever: ...


def _check_docs(docs: Sequence[Document]) -> list[str]:
    if not docs:
        raise ValueError("cannot build a retriever over an empty corpus")
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate document id {dup!r} in the corpus")
    return ids


def _begin_save(dir: str | Path) -> Path:
    """Create the folder and drop its meta.json first, so a save killed halfway leaves no valid index."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / META).unlink(missing_ok=True)
    return d


def _read_meta(dir: str | Path, kind: str | None = None) -> dict:
    d = Path(dir)
    if not d.is_dir():
        raise RetrieverError(f"{d}: no retriever index here (folder missing)")
    try:
        meta = json.loads((d / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RetrieverError(f"{d}: no {META} (not a retriever folder, or its save did not finish)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RetrieverError(f"{d / META}: corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("kind") not in RETRIEVERS:
        raise RetrieverError(f"{d / META}: 'kind' must be one of {sorted(RETRIEVERS)}, got {meta!r:.200}")
    if kind is not None and meta["kind"] != kind:
        raise RetrieverError(f"{d}: holds a {meta['kind']!r} index, not {kind!r}")
    return meta


def _read_ids(d: Path, n: int) -> list[str]:
    try:
        ids = json.loads((d / IDS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RetrieverError(f"{d / IDS}: missing or corrupt ({e})") from None
    if not isinstance(ids, list) or len(ids) != n or not all(isinstance(i, str) for i in ids):
        raise RetrieverError(f"{d / IDS}: expected {n} string ids matching the index")
    return ids


class BM25Retriever:
    """Lexical BM25 over title + text (bm25s; lowercase, English stopwords, no stemming)."""

    kind = "bm25"
    STOPWORDS = "en"

    def __init__(self, bm25, ids: list[str]):
        self.bm25, self.ids = bm25, ids

    @classmethod
    def _tokenize(cls, texts: list[str]) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(texts, stopwords=cls.STOPWORDS, return_ids=False, show_progress=False)

    @classmethod
    def build(cls, docs: Sequence[Document], k1: float = 1.5, b: float = 0.75) -> BM25Retriever:
        """Index the documents' "title\\ntext"."""
        import bm25s

        ids = _check_docs(docs)
        bm25 = bm25s.BM25(k1=k1, b=b)
        bm25.index(cls._tokenize([f"{d.title}\n{d.text}" for d in docs]), show_progress=False)
        return cls(bm25, ids)

    def search(self, queries: list[str], k: int) -> Hits:
        """Top-k ids and BM25 scores for each query (k is capped at the corpus size)."""
        queries, k = _checked_query(queries, k, len(self.ids))
        if k < 1:
            return [[] for _ in queries]
        idx, scores = self.bm25.retrieve(self._tokenize(list(queries)), k=k, show_progress=False, n_threads=0)
        # idx, scores: [n_queries, k], best first
        return [[(self.ids[int(i)], float(s)) for i, s in zip(row_i, row_s, strict=True)]
                for row_i, row_s in zip(idx, scores, strict=True)]

    def save(self, dir: str | Path) -> None:
        """bm25s' own files under dir/bm25, the id list, then meta.json last."""
        d = _begin_save(dir)
        self.bm25.save(str(d / "bm25"), show_progress=False)
        atomic_write_json(d / IDS, self.ids)
        atomic_write_json(d / META, {"kind": self.kind, "version": FORMAT_VERSION, "n_docs": len(self.ids),
                                     "tokenizer": {"lower": True, "stopwords": self.STOPWORDS}})

    @classmethod
    def load(cls, dir: str | Path) -> BM25Retriever:
        import bm25s

        meta = _read_meta(dir, cls.kind)
        d = Path(dir)
        try:
            bm25 = bm25s.BM25.load(str(d / "bm25"), show_progress=False)
        except Exception as e:  # bm25s raises whatever numpy/json raise on damaged files
            raise RetrieverError(f"{d / 'bm25'}: cannot load the BM25 index ({type(e).__name__}: {e})") from None
        n = int(bm25.scores["num_docs"])
        if meta.get("n_docs") not in (None, n):
            raise RetrieverError(f"{d}: meta.json says {meta['n_docs']} documents, the index has {n}")
        return cls(bm25, _read_ids(d, n))


class DenseRetriever:
    """Dense retrieval: MiniLM embeddings of "title: text", exact inner-product search (faiss IndexFlatIP)."""

    kind = "dense"

    def __init__(self, index, ids: list[str], encoder=None, batch_size: int = 64):
        self.index, self.ids, self._encoder, self.batch_size = index, ids, encoder, batch_size

    @property
    def encoder(self):
        """The sentence encoder, loaded on first use (cached per process)."""
        if self._encoder is None:
            from hyperprag.core.embedders import load_sentence_encoder

            self._encoder = load_sentence_encoder()
        return self._encoder

    def _embed(self, texts: list[str]) -> np.ndarray:
        from hyperprag.core.embedders import encode_texts

        return encode_texts(self.encoder, texts, batch_size=self.batch_size)  # [n, dim] unit rows

    @classmethod
    def build(cls, docs: Sequence[Document], encoder=None, batch_size: int = 64) -> DenseRetriever:
        """Embed every document and put the vectors in a flat inner-product index."""
        import faiss

        ids = _check_docs(docs)
        r = cls(None, ids, encoder, batch_size)
        emb = r._embed([d.full_text for d in docs])  # [n_docs, dim]
        r.index = faiss.IndexFlatIP(emb.shape[1])
        r.index.add(emb)
        return r

    def search(self, queries: list[str], k: int) -> Hits:
        """Top-k ids and cosine similarities for each query (k is capped at the corpus size)."""
        queries, k = _checked_query(queries, k, len(self.ids))
        if k < 1:
            return [[] for _ in queries]
        q = self._embed(list(queries))  # [n_queries, dim]
        if q.shape[1] != self.index.d:
            raise ValueError(f"encoder gives {q.shape[1]}-d vectors, the index holds {self.index.d}-d")
        scores, idx = self.index.search(q, k)  # [n_queries, k] each, best first
        return [[(self.ids[int(i)], float(s)) for i, s in zip(row_i, row_s, strict=True) if i >= 0]
                for row_i, row_s in zip(idx, scores, strict=True)]

    def save(self, dir: str | Path) -> None:
        """index.faiss (faiss.write_index), the id list, then meta.json last."""
        import faiss

        d = _begin_save(dir)
        tmp = d / ".index.faiss.tmp"
        faiss.write_index(self.index, str(tmp))
        tmp.replace(d / "index.faiss")
        atomic_write_json(d / IDS, self.ids)
        atomic_write_json(d / META, {"kind": self.kind, "version": FORMAT_VERSION, "n_docs": len(self.ids),
                                     "dim": int(self.index.d), "encoder": "all-MiniLM-L6-v2"})

    @classmethod
    def load(cls, dir: str | Path, encoder=None) -> DenseRetriever:
        import faiss

        meta = _read_meta(dir, cls.kind)
        d = Path(dir)
        if not (d / "index.faiss").is_file():
            raise RetrieverError(f"{d / 'index.faiss'}: missing")
        try:
            index = faiss.read_index(str(d / "index.faiss"))
        except RuntimeError as e:
            raise RetrieverError(f"{d / 'index.faiss'}: cannot read ({str(e).splitlines()[0]})") from None
        if meta.get("n_docs") not in (None, index.ntotal):
            raise RetrieverError(f"{d}: meta.json says {meta['n_docs']} documents, the index has {index.ntotal}")
        return cls(index, _read_ids(d, index.ntotal), encoder)


RETRIEVERS: dict[str, type] = {"bm25": BM25Retriever, "dense": DenseRetriever}


def build_retriever(kind: str, docs: Sequence[Document], **kwargs) -> Retriever:
    """A new index of `kind` ("bm25" | "dense") over the documents."""
    if kind not in RETRIEVERS:
        raise ValueError(f"unknown retriever kind {kind!r}; choose one of {sorted(RETRIEVERS)}")
    return RETRIEVERS[kind].build(docs, **kwargs)


def load_retriever(dir: str | Path) -> Retriever:
    """Whichever retriever `dir` holds, named by its meta.json."""
    return RETRIEVERS[_read_meta(dir)["kind"]].load(dir)


def recall_at_k(retrieved_ids: Sequence[str | tuple[str, float]], gold_ids: Sequence[str],
                k: int | None = None) -> float:
    """Fraction of the gold ids found among the (first k) retrieved ones; takes ids or (id, score) hits."""
    if not gold_ids:
        raise ValueError("recall@k needs at least one gold id")
    got = [r[0] if isinstance(r, tuple) else r for r in retrieved_ids]
    if k is not None:
        got = got[:k]
    found = set(got)
    gold = set(gold_ids)
    return sum(g in found for g in gold) / len(gold)
