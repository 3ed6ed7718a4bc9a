"""An ablation dataset's inputs: evaluated questions, the corpus they are answered from, the training pool.

Documents are re-identified by their content hash (``Document.content_hash``), so one teacher store and
one generated store serve every dataset: the same passage gets one adapter, whichever file it came from.

Split by question index: with one question file (2WikiMultihopQA, PopQA) the evaluated questions are
``questions[offset : offset + limit]`` and the training pool ``questions[train_offset : train_offset +
train_limit]``; the two ranges must not overlap. HotpotQA has its own training file (`train_questions`).
The training documents are the pool's gold passages in question order (deduplicated), minus every passage
of any evaluated question of any dataset, so the hypernetwork is always evaluated on unseen documents.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hyperprag.ablation.config import ConfigError, DatasetConfig
from hyperprag.core.data import (
    Document,
    Question,
    gold_passages,
    load_corpus,
    load_questions,
    passage_documents,
    pool_corpus,
    unique_by_content,
)
from hyperprag.core.paths import resolve_path


@dataclass
class DatasetInputs:
    """Everything one dataset contributes to the grid."""

    config: DatasetConfig
    """The dataset's configuration (paths resolved)."""
    questions: list[Question]
    """Evaluated questions; their passages are their gold documents (see DatasetConfig.gold)."""
    corpus: list[Document]
    """The retrieval corpus, ids = content hashes."""
    pool: list[Document]
    """Training-pool documents in order (before excluding evaluated passages), ids = content hashes."""
    evaluated_hashes: set[str]
    """Content hashes of every passage (gold or not) of the evaluated questions."""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def corpus_by_id(self) -> dict[str, Document]:
        return {d.id: d for d in self.corpus}


def _slice(items: list, offset: int, limit: int | None) -> list:
    return items[offset:] if limit is None else items[offset:offset + limit]


def resolved(cfg: DatasetConfig) -> DatasetConfig:
    """The config with absolute paths."""
    paths = {k: str(resolve_path(getattr(cfg, k))) for k in ("questions", "corpus", "train_questions")
             if getattr(cfg, k) is not None}
    return replace(cfg, **paths)


def load_dataset(cfg: DatasetConfig) -> DatasetInputs:
    """Load and split one dataset (paths resolved against the current directory, then the repository)."""
    cfg = resolved(cfg)
    for key in ("questions", "corpus", "train_questions"):
        path = getattr(cfg, key)
        if path is not None and not resolve_path(path).is_file():
            raise ConfigError(f"dataset {cfg.name!r}: {key} file {path} does not exist")
    all_qs = list(load_questions(cfg.questions))
    evaluated = _slice(all_qs, cfg.offset, cfg.limit)
    if not evaluated:
        raise ConfigError(f"dataset {cfg.name!r}: no questions in {cfg.questions} from offset {cfg.offset}")
    same_file = cfg.train_questions in (None, cfg.questions)
    train_all = all_qs if same_file else list(load_questions(cfg.train_questions))
    train_qs = _slice(train_all, cfg.train_offset, cfg.train_limit)
    if same_file and train_qs:
        e0, e1 = cfg.offset, cfg.offset + len(evaluated)
        t0, t1 = cfg.train_offset, cfg.train_offset + len(train_qs)
        if t0 < e1 and e0 < t1:
            raise ConfigError(f"dataset {cfg.name!r}: training questions {t0}-{t1 - 1} overlap the evaluated "
                              f"questions {e0}-{e1 - 1} of {cfg.questions} (fields train_offset/train_limit "
                              "vs offset/limit)")
    corpus = unique_by_content(load_corpus(cfg.corpus) if cfg.corpus else pool_corpus(all_qs))
    questions = [replace(q, passages=gold_passages(q, cfg.gold)) for q in evaluated]
    pool = passage_documents(train_qs, cfg.gold)
    seen = {p.content_hash for q in evaluated for p in q.passages}
    return DatasetInputs(cfg, questions, corpus, pool, seen)


def evaluated_passage_hashes(datasets: list[DatasetInputs]) -> set[str]:
    """Content hashes of every passage of every evaluated question (kept out of hypernetwork training)."""
    return set().union(*(ds.evaluated_hashes for ds in datasets))


def training_documents(datasets: list[DatasetInputs], train_on: list[str] | None, size: int,
                       exclude: set[str]) -> list[Document]:
    """The first `size` usable pool documents of each training dataset, in dataset order (deduplicated)."""
    out: dict[str, Document] = {}
    for ds in datasets:
        if train_on is not None and ds.name not in train_on:
            continue
        picked = [d for d in ds.pool if d.id not in exclude][:size]
        for d in picked:
            out.setdefault(d.id, d)
    return list(out.values())
