"""Data for hypernetwork training: per document its embedding, its teacher LoRA and its QA sequences.

A batch holds `batch_size` documents and, flattened, up to `qa_per_doc` tokenized QA sequences of each
(right-padded, answer-only labels, `doc_index` pointing at the sequence's document), so every sequence
can be run with its own document's generated adapter. Documents are split into train / validation by
document (seeded), never by question, so validation measures documents the hypernetwork never saw.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hypernet.config import EncoderSpec
from hyperprag.core.lora import LoraWeights
from training.sequences import QA_KINDS, Example, SequenceOptions, build_examples, collate

log = logging.getLogger(__name__)


@dataclass
class DocItem:
    """One training document, everything the hypernetwork learns it from."""

    doc_id: str
    embedding: Tensor  # [d]
    examples: list[Example]  # tokenized QA sequences (answer-only labels)
    qa: list[tuple[str, list[str]]] = field(default_factory=list)  # (question, gold answers) for exact match
    teacher: LoraWeights | None = None  # unbatched; None = read lazily with the dataset's `teacher_fn`


class DocDataset(Dataset):
    """Documents; teacher adapters come from the item or are read on access (a store holds many GB)."""

    def __init__(self, items: Sequence[DocItem], teacher_fn: Callable[[str], LoraWeights] | None = None):
        self.items, self.teacher_fn = list(items), teacher_fn

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[DocItem, LoraWeights]:
        item = self.items[i]
        teacher = item.teacher if item.teacher is not None else self.teacher_fn(item.doc_id)  # type: ignore[misc]
        return item, teacher


class DocCollator:
    """Documents -> one batch dict (a class, not a closure, so DataLoader workers can pickle it)."""

    def __init__(self, pad_id: int, qa_per_doc: int | None, em_per_doc: int, shuffle: bool):
        self.pad_id, self.qa_per_doc, self.em_per_doc, self.shuffle = pad_id, qa_per_doc, em_per_doc, shuffle

    def _pick(self, examples: list[Example]) -> list[Example]:
        if self.qa_per_doc is None or len(examples) <= self.qa_per_doc:
            return examples
        if self.shuffle:  # global RNG: seeded by seed_everything, differs per rank and worker
            idx = torch.randperm(len(examples))[: self.qa_per_doc].tolist()
            return [examples[i] for i in sorted(idx)]
        return examples[: self.qa_per_doc]

    def __call__(self, batch: list[tuple[DocItem, LoraWeights]]) -> dict:
        items = [it for it, _ in batch]
        teacher = LoraWeights.stack([t.to(torch.float32) for _, t in batch])  # [b, L, ...]
        chosen = [replace(ex, doc_index=i) for i, it in enumerate(items) for ex in self._pick(it.examples)]
        out: dict = {"doc_ids": [it.doc_id for it in items],
                     "emb": torch.stack([it.embedding.float() for it in items]),  # [b, d]
                     "teacher_A": teacher.A, "teacher_B": teacher.B,
                     "qa": [(i, q, list(a)) for i, it in enumerate(items) for q, a in it.qa[: self.em_per_doc]]}
        if chosen:
            out.update(collate(chosen, self.pad_id))  # input_ids / labels / attention_mask [N, t], doc_index [N]
        return out


def split_by_document(doc_ids: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train ids, val ids): a seeded shuffle of the documents, the last `val_fraction` held out."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = sorted(doc_ids)
    random.Random(seed).shuffle(ids)
    n_val = round(val_fraction * len(ids))
    if val_fraction > 0 and len(ids) > 1:
        n_val = max(1, n_val)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


def load_augmentation_map(path: str | Path, method: str | None = None) -> dict[str, object]:
    """Augmentations keyed by document id and by content hash.

    `path` is an augmentation cache folder (training/augment/cache.py: one ``{content_hash}-{key}.json``
    per document and settings; with several for one content the `method` filter, then the newest file,
    decides) or a JSONL file of Augmentation records.
    """
    import json

    from hyperprag.core.io import read_jsonl_records
    from training.augment.records import Augmentation

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"augmentation cache {path} does not exist (run the augmentation step first)")
    out: dict[str, object] = {}
    if path.is_dir():
        files = sorted(path.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)  # newest first
        for f in files:
            try:
                rec = json.loads(f.read_text(encoding="utf-8"))
                if method is not None and (rec.get("meta") or {}).get("method") != method:
                    continue
                aug = Augmentation.from_dict(rec["augmentation"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("skipping unreadable augmentation cache file %s: %s", f, err)
                continue
            out.setdefault(aug.content_hash, aug)
        return out
    for lineno, rec in enumerate(read_jsonl_records(path), 1):
        try:
            aug = Augmentation.from_dict(rec)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}, line {lineno}: not an augmentation record ({err})") from err
        out.setdefault(aug.doc_id, aug)
        out.setdefault(aug.content_hash, aug)
    return out


class HyperDataModule(pl.LightningDataModule):
    """Documents with teacher adapters (an AdapterStore), augmentations and cached embeddings."""

    def __init__(self, corpus: str | None = None, teacher_store: str | None = None,
                 augmentations: str | None = None, base_model: str = "smollm2-135m",
                 encoder: EncoderSpec | None = None, embedding_cache_dir: str | None = None,
                 val_fraction: float = 0.1, split_seed: int = 0, batch_size: int = 8,
                 qa_per_doc: int | None = 4, val_qa_per_doc: int | None = 8, em_per_doc: int = 2,
                 sequence_kinds: tuple[str, ...] = ("qa_closed",), max_length: int = 256,
                 augment_method: str | None = None, max_docs: int | None = None, encode_batch_size: int = 16,
                 num_workers: int = 0):
        """
        Args:
            corpus: corpus JSONL ({"id", "title", "text"}) of the training documents.
            teacher_store: AdapterStore folder with each document's teacher LoRA.
            augmentations: augmentation cache folder (training/augment) or a JSONL of Augmentation records.
            base_model: base model name (tokenizer, and the 'llm' encoder); linked from the model by the CLI.
            encoder: document encoder; its width sets the hypernetwork's input.
            embedding_cache_dir: where document embeddings are cached (None = recompute every run).
            val_fraction: fraction of documents held out for validation (split by document).
            split_seed: seed of the train / validation split.
            batch_size: documents per batch.
            qa_per_doc: QA sequences per document per training batch (sampled; None = all).
            val_qa_per_doc: QA sequences per document in validation (the first ones; None = all).
            em_per_doc: questions per document for closed-book exact match in validation.
            sequence_kinds: which training/sequences.py kinds to train on (qa_closed, qa_passage, qa_rewrite).
            max_length: longest QA sequence in tokens.
            augment_method: with a cache folder holding several augmentations of a document, use this
                method's (rules | llm | rules+llm); None = the newest.
            max_docs: use only the first N usable documents (debugging).
            encode_batch_size: documents per encoder forward when filling the embedding cache.
            num_workers: DataLoader worker processes.
        """
        super().__init__()
        bad = [k for k in sequence_kinds if k not in QA_KINDS]
        if bad:
            raise ValueError(f"sequence_kinds {bad} are not QA kinds {QA_KINDS}")
        self.corpus, self.teacher_store, self.augmentations = corpus, teacher_store, augmentations
        self.base_model = base_model
        self.encoder = encoder or EncoderSpec()
        self.embedding_cache_dir = embedding_cache_dir
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.batch_size, self.qa_per_doc, self.val_qa_per_doc = batch_size, qa_per_doc, val_qa_per_doc
        self.em_per_doc = em_per_doc
        self.sequence_kinds, self.max_length = tuple(sequence_kinds), max_length
        self.augment_method = augment_method
        self.max_docs, self.encode_batch_size, self.num_workers = max_docs, encode_batch_size, num_workers
        self.pad_id: int | None = None
        self.train_set: DocDataset | None = None
        self.val_set: DocDataset | None = None
        self.store_base_model: str | None = None
        self.store_spec = None

    @classmethod
    def from_items(cls, train: Sequence[DocItem], val: Sequence[DocItem], pad_id: int, **kwargs) -> HyperDataModule:
        """A data module over ready-made items (tests, synthetic runs, other sources)."""
        dm = cls(**kwargs)
        dm.train_set, dm.val_set, dm.pad_id = DocDataset(train), DocDataset(val), pad_id
        return dm

    # ---- building items from files -------------------------------------------------------------------

    def _sources(self):
        from hyperprag.core.data import load_corpus
        from hyperprag.core.store import AdapterStore

        missing = [n for n in ("corpus", "teacher_store", "augmentations") if getattr(self, n) is None]
        if missing:
            raise ValueError(f"HyperDataModule needs {missing} (or use HyperDataModule.from_items)")
        docs = load_corpus(self.corpus, long_docs="chunk")
        store = AdapterStore.open(self.teacher_store)
        by_key = load_augmentation_map(self.augmentations, self.augment_method)
        augs = {d.id: by_key.get(d.id) or by_key.get(d.content_hash) for d in docs}
        usable = [d for d in docs if d.id in store and augs[d.id] is not None and augs[d.id].qa]
        skipped = len(docs) - len(usable)
        if skipped:
            log.warning("%d of %d corpus documents lack a teacher adapter, an augmentation or QA pairs; skipped",
                        skipped, len(docs))
        if not usable:
            raise ValueError(f"no document of {self.corpus} has both a teacher adapter in {self.teacher_store} "
                             f"and QA pairs in {self.augmentations}")
        if self.max_docs is not None:
            usable = usable[: self.max_docs]
        return usable, store, augs

    def _embeddings(self, docs) -> Tensor:
        from hypernet.encoders import EmbeddingCache, build_encoder, cached_embeddings, encoder_id

        keys = [d.content_hash for d in docs]
        if self.embedding_cache_dir is not None:
            hit = EmbeddingCache(self.embedding_cache_dir).lookup(encoder_id(self.encoder, self.base_model), keys)
            if hit is not None:
                return hit
        model = tokenizer = None
        if self.encoder.kind == "llm":  # the base model itself, loaded only while encoding
            from hyperprag.core.models import load_base_model

            model, tokenizer = load_base_model(self.base_model, device="cuda" if torch.cuda.is_available() else "cpu")
        encoder = build_encoder(self.encoder, model, tokenizer)
        emb = cached_embeddings(encoder, keys, [d.full_text for d in docs],
                                self.embedding_cache_dir, self.encode_batch_size)
        del encoder, model
        return emb  # [n, d]

    def prepare_data(self) -> None:
        """Fill the embedding cache once (rank 0) so every rank's setup only reads it."""
        if self.train_set is not None or self.embedding_cache_dir is None or self.corpus is None:
            return
        docs, _, _ = self._sources()
        self._embeddings(docs)

    def _tokenizer(self):
        from transformers import AutoTokenizer

        from hyperprag.core.models import resolve_model_path

        tok = AutoTokenizer.from_pretrained(resolve_model_path(self.base_model))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        return tok

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        docs, store, augs = self._sources()
        self.store_base_model, self.store_spec = store.base_model, store.spec
        tokenizer = self._tokenizer()
        self.pad_id = tokenizer.pad_token_id
        emb = self._embeddings(docs)
        settings = store.settings  # the teacher's TeacherConfig, if its writer recorded it
        options = SequenceOptions(kinds=self.sequence_kinds, max_length=self.max_length,
                                  answers=tuple(settings.get("answers") or ("short",)), max_qa=settings.get("max_qa"))
        items = {}
        for i, doc in enumerate(docs):
            examples, _ = build_examples(tokenizer, doc, augs[doc.id], options, doc_index=0)
            if not examples:
                continue
            qa = [(q.question, [q.answer]) for q in augs[doc.id].qa]
            items[doc.id] = DocItem(doc.id, emb[i], examples, qa)
        train_ids, val_ids = split_by_document(list(items), self.val_fraction, self.split_seed)

        def teacher_fn(doc_id: str) -> LoraWeights:
            return store.get(doc_id, dtype="float32")

        self.train_set = DocDataset([items[i] for i in train_ids], teacher_fn)
        self.val_set = DocDataset([items[i] for i in val_ids], teacher_fn)
        log.info("hypernetwork data: %d train / %d validation documents", len(train_ids), len(val_ids))

    # ---- loaders -----------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None and self.pad_id is not None, "call setup() first"
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          collate_fn=DocCollator(self.pad_id, self.qa_per_doc, self.em_per_doc, shuffle=True),
                          drop_last=len(self.train_set) > self.batch_size, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None and self.pad_id is not None, "call setup() first"
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=DocCollator(self.pad_id, self.val_qa_per_doc, self.em_per_doc, shuffle=False))

    @property
    def embedding_dim(self) -> int | None:
        ds = self.train_set or self.val_set
        return int(ds.items[0].embedding.shape[-1]) if ds is not None and ds.items else None
