"""Data for hypernetwork training: per document its input, its teacher LoRA (if any) and its QA sequences.

A document's input is its pooled embedding (pooled encoders) or its own tokens, which the module turns
into the base model's per-layer token states (token-level networks). QA pairs come from augmentation (the
rule questions of training/augment, cached or made on the fly) and from question files whose gold
passage is the document (e.g. the reworded questions of hyperprag/demo/synth.py). A document without a
teacher LoRA still trains the function losses (answer cross-entropy) when `require_teacher` is off, so
a corpus can hold thousands of documents of which a few hundred have teachers.

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
from training.sequences import (
    QA_KINDS,
    Example,
    SequenceOptions,
    build_examples,
    build_texts,
    collate,
    tokenize_text,
)

log = logging.getLogger(__name__)


@dataclass
class DocItem:
    """One training document, everything the hypernetwork learns it from."""

    doc_id: str
    embedding: Tensor | None  # [d] for pooled encoders; None for token-level networks
    examples: list[Example]  # tokenized QA sequences (answer-only labels)
    qa: list[tuple[str, list[str]]] = field(default_factory=list)  # (question, gold answers) for exact match
    teacher: LoraWeights | None = None  # unbatched; None = read lazily with the dataset's `teacher_fn`
    doc_tokens: list[int] | None = None  # the document's own tokens (token-level networks)
    context_examples: list[Example] | None = None  # examples[i] with the document in its prompt (context KL)


class DocDataset(Dataset):
    """Documents; teacher adapters come from the item or are read on access (a store holds many GB).

    `teacher_fn` returns None for a document without a teacher.
    """

    def __init__(self, items: Sequence[DocItem], teacher_fn: Callable[[str], LoraWeights | None] | None = None):
        self.items, self.teacher_fn = list(items), teacher_fn

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[DocItem, LoraWeights | None]:
        item = self.items[i]
        teacher = item.teacher
        if teacher is None and self.teacher_fn is not None:
            teacher = self.teacher_fn(item.doc_id)
        return item, teacher


def _pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token lists -> (ids, mask) [n, T], right-padded."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def _stack_teachers(teachers: Sequence[LoraWeights | None]) -> tuple[LoraWeights, Tensor] | None:
    """Batched teachers (zeros where a document has none) and which documents have one [b], or None."""
    present = [t for t in teachers if t is not None]
    if not present:
        return None
    ref = present[0].to(torch.float32)
    zero = LoraWeights({m: torch.zeros_like(a) for m, a in ref.A.items()},
                       {m: torch.zeros_like(b) for m, b in ref.B.items()})
    stacked = LoraWeights.stack([t.to(torch.float32) if t is not None else zero for t in teachers])
    return stacked, torch.tensor([t is not None for t in teachers])


class DocCollator:
    """Documents -> one batch dict (a class, not a closure, so DataLoader workers can pickle it)."""

    def __init__(self, pad_id: int, qa_per_doc: int | None, em_per_doc: int, shuffle: bool,
                 passage_share: float | None = None):
        self.pad_id, self.qa_per_doc, self.em_per_doc, self.shuffle = pad_id, qa_per_doc, em_per_doc, shuffle
        self.passage_share = passage_share

    def _pick(self, examples: Sequence[Example]) -> list[int]:
        """Which of a document's examples go into the batch: `qa_per_doc` of them, at random when shuffling
        (of which round(qa_per_doc * passage_share) in-context ones, when set and available), else the first."""
        n = len(examples)
        if self.qa_per_doc is None or n <= self.qa_per_doc:
            return list(range(n))
        if not self.shuffle:
            return list(range(self.qa_per_doc))
        # global RNG: seeded by seed_everything, differs per rank and worker
        if self.passage_share is None:
            return sorted(torch.randperm(n)[: self.qa_per_doc].tolist())
        inside = [i for i, e in enumerate(examples) if e.kind == "qa_passage"]
        closed = [i for i, e in enumerate(examples) if e.kind != "qa_passage"]
        want = min(len(inside), round(self.qa_per_doc * self.passage_share))
        want = max(want, self.qa_per_doc - len(closed))  # too few closed-book ones: fill with in-context
        take_inside = [inside[i] for i in torch.randperm(len(inside))[:want].tolist()]
        take_closed = [closed[i] for i in torch.randperm(len(closed))[: self.qa_per_doc - want].tolist()]
        return sorted(take_inside + take_closed)

    def __call__(self, batch: list[tuple[DocItem, LoraWeights | None]]) -> dict:
        items = [it for it, _ in batch]
        picks = [(i, it, j) for i, it in enumerate(items) for j in self._pick(it.examples)]
        chosen = [replace(it.examples[j], doc_index=i) for i, it, j in picks]
        out: dict = {"doc_ids": [it.doc_id for it in items],
                     "qa": [(i, q, list(a)) for i, it in enumerate(items) for q, a in it.qa[: self.em_per_doc]]}
        if items[0].embedding is not None:
            out["emb"] = torch.stack([it.embedding.float() for it in items])  # [b, d]
        if items[0].doc_tokens is not None:  # [b, T] right-padded document tokens
            out["doc_input_ids"], out["doc_attention_mask"] = _pad_right([it.doc_tokens for it in items],
                                                                         self.pad_id)
        teachers = _stack_teachers([t for _, t in batch])
        if teachers is not None:  # [b, L, ...]; has_teacher [b] marks the real ones
            out["teacher_A"], out["teacher_B"], out["has_teacher"] = teachers[0].A, teachers[0].B, teachers[1]
        if chosen and all(it.context_examples is not None for it in items):
            context = collate([replace(it.context_examples[j], doc_index=i) for i, it, j in picks], self.pad_id)
            out.update({f"ctx_{k}": v for k, v in context.items() if k != "doc_index"})
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

    def __init__(self, corpus: str | list[str] | None = None, teacher_store: str | None = None,
                 augmentations: str | None = None, questions: list[str] | None = None,
                 require_teacher: bool = True, base_model: str = "smollm2-135m",
                 encoder: EncoderSpec | None = None, embedding_cache_dir: str | None = None,
                 val_fraction: float = 0.1, split_seed: int = 0, batch_size: int = 8,
                 qa_per_doc: int | None = 4, val_qa_per_doc: int | None = 8, em_per_doc: int = 2,
                 sequence_kinds: tuple[str, ...] = ("qa_closed",), max_length: int = 256,
                 augment_method: str | None = None, max_qa: int | None = None, context_kl: bool = False,
                 max_docs: int | None = None, encode_batch_size: int = 16, num_workers: int = 0,
                 passage_share: float | None = None):
        """
        Args:
            corpus: corpus JSONL ({"id", "title", "text"}) of the training documents, or a list of them
                (ids must be unique across the files).
            teacher_store: AdapterStore folder with teacher LoRAs of (some of) the documents; None = none.
            augmentations: augmentation cache folder (training/augment) or a JSONL of Augmentation records;
                None = rule questions made on the fly (a few ms a document, nothing written).
            questions: question JSONL files; a question whose gold passage is a corpus document (same title
                and text) becomes one of that document's QA pairs, ahead of the augmentation's.
            require_teacher: keep only documents with a teacher LoRA (the pooled networks learn from
                teachers); false = documents without one train the function losses alone.
            base_model: base model name (tokenizer, and the 'llm' encoder); linked from the model by the CLI.
            encoder: document encoder; its width sets the hypernetwork's input ('tokens': the module
                computes the base model's token states from each document's tokens).
            embedding_cache_dir: where pooled document embeddings are cached (None = recompute every run).
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
            max_qa: at most this many QA pairs per document (given questions first); None = the teacher
                store's setting, else all.
            context_kl: also give each closed-book QA sequence with the document in its prompt, for the
                in-context distillation loss (loss_weights.ctx).
            max_docs: use only the first N usable documents (debugging).
            encode_batch_size: documents per encoder forward when filling the embedding cache.
            num_workers: DataLoader worker processes.
            passage_share: share of a document's sampled training QA sequences that carry the document in
                the prompt (kind qa_passage), e.g. 0.25 = 1 of 4; None = drawn uniformly from all it has.
        """
        super().__init__()
        bad = [k for k in sequence_kinds if k not in QA_KINDS]
        if bad:
            raise ValueError(f"sequence_kinds {bad} are not QA kinds {QA_KINDS}")
        if passage_share is not None and not (0 <= passage_share <= 1 and "qa_passage" in sequence_kinds):
            raise ValueError(f"passage_share {passage_share} needs a value in [0, 1] and qa_passage among "
                             f"sequence_kinds {list(sequence_kinds)}")
        self.passage_share = passage_share
        self.corpus, self.teacher_store, self.augmentations = corpus, teacher_store, augmentations
        self.questions, self.require_teacher = list(questions or []), require_teacher
        self.base_model = base_model
        self.encoder = encoder or EncoderSpec()
        self.embedding_cache_dir = embedding_cache_dir
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.batch_size, self.qa_per_doc, self.val_qa_per_doc = batch_size, qa_per_doc, val_qa_per_doc
        self.em_per_doc = em_per_doc
        self.sequence_kinds, self.max_length = tuple(sequence_kinds), max_length
        self.augment_method, self.max_qa, self.context_kl = augment_method, max_qa, context_kl
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

    def _documents(self) -> list:
        from hyperprag.core.data import load_corpus

        paths = [self.corpus] if isinstance(self.corpus, str) else list(self.corpus or [])
        docs, where = [], {}
        for path in paths:
            for doc in load_corpus(path, long_docs="chunk"):
                if doc.id in where:
                    raise ValueError(f"{path}: document id {doc.id!r} is also in {where[doc.id]}; ids must be "
                                     "unique across the corpus files")
                where[doc.id] = path
                docs.append(doc)
        return docs

    def _augmentations(self, docs) -> dict:
        """Document id -> Augmentation whose QA pairs start with the question files' questions about it."""
        from training.augment import augment_documents
        from training.augment.records import Augmentation, QAPair

        if self.augmentations is not None:
            by_key = load_augmentation_map(self.augmentations, self.augment_method)
            augs = {d.id: by_key.get(d.id) or by_key.get(d.content_hash) for d in docs}
        else:
            augs = {d.id: a for d, a in zip(docs, augment_documents(docs, method="rules"), strict=True)}
        given = given_questions(self.questions, {d.content_hash for d in docs})
        out = {}
        for d in docs:
            aug = augs[d.id] or Augmentation(d.id, d.content_hash)
            extra = [QAPair(q, a, "", "given") for q, a in given.get(d.content_hash, [])]
            out[d.id] = replace(aug, qa=extra + list(aug.qa)) if extra else aug
        return out

    def _sources(self):
        from hyperprag.core.store import AdapterStore

        if self.corpus is None:
            raise ValueError("HyperDataModule needs a corpus (or use HyperDataModule.from_items)")
        if self.teacher_store is None and self.require_teacher:
            raise ValueError("HyperDataModule needs a teacher_store, or require_teacher: false to train on the "
                             "function losses alone")
        docs = self._documents()
        store = AdapterStore.open(self.teacher_store) if self.teacher_store is not None else None
        if self.max_docs is not None and not self.require_teacher:
            docs = docs[: self.max_docs]  # every document is usable: augment only these
        augs = self._augmentations(docs)
        usable = [d for d in docs if augs[d.id].qa and (not self.require_teacher or d.id in store)]
        skipped = len(docs) - len(usable)
        if skipped:
            log.warning("%d of %d corpus documents lack %sQA pairs; skipped", skipped, len(docs),
                        "a teacher adapter or " if self.require_teacher else "")
        if not usable:
            raise ValueError(f"no document of {self.corpus} has QA pairs"
                             + (f" and a teacher adapter in {self.teacher_store}" if self.require_teacher else ""))
        if self.max_docs is not None:
            usable = usable[: self.max_docs]
        return usable, store, augs

    @property
    def token_level(self) -> bool:
        return self.encoder.kind == "tokens"

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
        if (self.train_set is not None or self.embedding_cache_dir is None or self.corpus is None
                or self.token_level):
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
        if store is not None:
            self.store_base_model, self.store_spec = store.base_model, store.spec
        tokenizer = self._tokenizer()
        self.pad_id = tokenizer.pad_token_id
        emb = None if self.token_level else self._embeddings(docs)
        settings = store.settings if store is not None else {}  # the teacher's TeacherConfig, if recorded
        options = SequenceOptions(kinds=self.sequence_kinds, max_length=self.max_length,
                                  answers=tuple(settings.get("answers") or ("short",)),
                                  max_qa=self.max_qa if self.max_qa is not None else settings.get("max_qa"))
        items = {}
        for i, doc in enumerate(docs):
            examples, context = document_examples(tokenizer, doc, augs[doc.id], options, self.context_kl)
            if not examples:
                continue
            qa = [(q.question, [q.answer]) for q in augs[doc.id].qa]
            tokens = (tokenizer(doc.full_text, truncation=True, max_length=self.encoder.max_length)["input_ids"]
                      if self.token_level else None)
            items[doc.id] = DocItem(doc.id, None if emb is None else emb[i], examples, qa, doc_tokens=tokens,
                                    context_examples=context)
        train_ids, val_ids = split_by_document(list(items), self.val_fraction, self.split_seed)

        def teacher_fn(doc_id: str) -> LoraWeights | None:
            return store.get(doc_id, dtype="float32") if store is not None and doc_id in store else None

        self.train_set = DocDataset([items[i] for i in train_ids], teacher_fn)
        self.val_set = DocDataset([items[i] for i in val_ids], teacher_fn)
        log.info("hypernetwork data: %d train / %d validation documents", len(train_ids), len(val_ids))

    # ---- loaders -----------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None and self.pad_id is not None, "call setup() first"
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          collate_fn=DocCollator(self.pad_id, self.qa_per_doc, self.em_per_doc, shuffle=True,
                                                 passage_share=self.passage_share),
                          drop_last=len(self.train_set) > self.batch_size, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None and self.pad_id is not None, "call setup() first"
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=DocCollator(self.pad_id, self.val_qa_per_doc, self.em_per_doc, shuffle=False))

    @property
    def embedding_dim(self) -> int | None:
        ds = self.train_set or self.val_set
        if ds is None or not ds.items or ds.items[0].embedding is None:
            return None
        return int(ds.items[0].embedding.shape[-1])


def document_examples(tokenizer, doc, aug, options: SequenceOptions, with_context: bool = False
                      ) -> tuple[list[Example], list[Example] | None]:
    """A document's QA examples and, with `with_context`, each one again with the document in its prompt
    (same completion tokens; closed-book examples only). Pairs that do not both fit are dropped."""
    if not with_context:
        return build_examples(tokenizer, doc, aug, options, doc_index=0)[0], None
    if set(options.kinds) != {"qa_closed"}:
        raise ValueError(f"context_kl pairs closed-book sequences with in-context ones; sequence_kinds must be "
                         f"[qa_closed], got {list(options.kinds)}")
    examples, context = [], []
    for text in build_texts(doc, aug, options):
        closed = tokenize_text(tokenizer, text, options)
        inside = tokenize_text(tokenizer, replace(text, passage=(doc.title, doc.text)), options)
        if closed and inside:
            examples.append(closed[0])
            context.append(inside[0])
    return examples, context


def given_questions(paths: Sequence[str], content_hashes: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Content hash -> [(question, gold answer)] of the questions in `paths` whose gold passage is one of
    the documents (by content); multiple-choice questions are left out (their answer is a letter)."""
    from hyperprag.core.data import load_questions

    out: dict[str, list[tuple[str, str]]] = {}
    for path in paths:
        for q in load_questions(path):
            if q.options:
                continue
            gold = [p for p in q.passages if p.supporting] or q.passages[:1]
            for passage in gold:
                if passage.content_hash in content_hashes:
                    out.setdefault(passage.content_hash, []).append((q.question, q.answers[0]))
                    break
    return out
