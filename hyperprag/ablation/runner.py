"""`hyperprag ablate --config configs/ablation/X.yaml`: the comparison grid, resumable, into one results folder.

A cell is one (dataset, method, hypernetwork variant, top-k, composition rule). It reports EM/F1 (per
dataset and question type, inference/evaluate.py), the mean gold-answer loss, the offline cost of
parameterizing a document (teacher training seconds per document, or hypernetwork encode + forward), the
online latency per question and the bytes stored per document. The specificity checks answer
closed-book with each question's own document's adapter, another document's and none, for the teacher and
for every variant. A variant trained on one dataset and evaluated on another (`train_on`) is out of domain.

Results folder::

    config.yaml, config.resolved.json   the config as given, and resolved (paths, variants, teacher, cell ids)
    metrics.json, table.md, plots/*.png the report over every cell and check of the grid
    cells/<cell_id>.json                one finished cell or check, written atomically (reruns skip it)
    cells/<cell_id>/predictions/*.jsonl its answers (a killed cell resumes mid-way)
    stores/teacher-<h>/                 teacher LoRAs, shared by all cells: the evaluated documents the
                                        prag cells and checks need, plus the hypernetworks' training documents
    hypernets/<variant>-<h>/            train.yaml (rerun by hand with `hyperprag train --config`), Lightning
                                        checkpoints, CSV logs and the exported hypernet/, shared by its cells
    stores/hyper-<variant>-<h>/         adapters it generated for the evaluated documents, parameterize.json
    retrieval/, cache/                  retrieval indexes and top-k lists; augmentations and embeddings
    logs/ablation.log                   everything logged, every run appended

A cell id is ``<dataset>-<method>[-<variant>][-k<k>][-<rule>]-<hash>``, the hash over its resolved settings
(dataset files and split, base model, teacher settings, the variant's training settings and documents,
generation length); the batch size is not part of it. Teacher stores and hypernetworks are keyed by their
settings the same way, so a changed setting never reuses stale results and an unchanged one is never redone.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hyperprag.ablation.config import (
    AblationConfig,
    Variant,
    expand_variants,
    load_config,
    slug,
    stable_hash,
)
from hyperprag.ablation.data import (
    DatasetInputs,
    evaluated_passage_hashes,
    load_dataset,
    training_documents,
)
from hyperprag.core.data import Document, write_jsonl
from hyperprag.core.io import atomic_write_json, atomic_write_text
from hyperprag.core.paths import resolve_path
from inference.modes import HYPER_MODES, TEACHER_MODES

log = logging.getLogger(__name__)
STAGES = 6


@dataclass
class Cell:
    """One unit of the grid: an evaluation (kind "eval") or a specificity check (kind "specificity")."""

    kind: str
    """eval | specificity."""
    dataset: str
    """Evaluated dataset's name."""
    method: str
    """eval: the answering mode; specificity: teacher | hyper."""
    variant: Variant | None = None
    """The hypernetwork variant (hyper methods)."""
    top_k: int | None = None
    """Documents per question (None for vanilla and checks)."""
    composition: str | None = None
    """Composition rule (adapter methods with top_k > 1)."""
    identity: dict = field(default_factory=dict)
    """Resolved settings that define the result (hashed into the id)."""

    @property
    def id(self) -> str:
        parts = [self.dataset, self.method if self.kind == "eval" else f"spec-{self.method}"]
        if self.variant is not None:
            parts.append(self.variant.name)
        if self.top_k is not None:
            parts.append(f"k{self.top_k}")
        if self.composition is not None:
            parts.append(self.composition)
        return slug("-".join(parts)) + "-" + stable_hash(self.identity, 8)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _stage(i: int, text: str) -> None:
    print(f"[ablate {i}/{STAGES}] {text}", flush=True)
    log.info("stage %d/%d: %s", i, STAGES, text)


class Ablation:
    """The grid over one config and results folder; `run()` does what is missing and writes the report."""

    def __init__(self, cfg: AblationConfig, out: Path, config_path: Path | None = None):
        self.cfg, self.out, self.config_path = cfg, out, config_path
        self.model = _model_name(cfg.model)
        self.device = _device(cfg.device)
        self.teacher = cfg.teacher_config()
        self.datasets: dict[str, DatasetInputs] = {d.name: load_dataset(d) for d in cfg.datasets}
        self.variants = expand_variants(cfg.variants)
        self.exclude = evaluated_passage_hashes(list(self.datasets.values()))
        self.teacher_id = stable_hash({"teacher": self.teacher.to_dict(), "augment": cfg.augment, "model": self.model})
        self.hyper_base = self._hypernet_base()
        self._variant_ids = {v.name: self._variant_id(v) for v in self.variants}
        self._retrievers: dict[str, object] = {}
        self._retrieved: dict[tuple[str, int], list[list[str]]] = {}
        self._base = None

    # ---- identities and paths --------------------------------------------------------------------------

    def _hypernet_base(self) -> dict:
        import yaml

        base: dict = {}
        if self.cfg.hypernet_config:
            base = yaml.safe_load(resolve_path(self.cfg.hypernet_config).read_text(encoding="utf-8")) or {}
        return _deep_merge(base, self.cfg.hypernet_defaults)

    def training_docs(self, v: Variant) -> list[Document]:
        return training_documents(list(self.datasets.values()), v.config.train_on, v.size, self.exclude)

    def teacher_docs(self, v: Variant) -> list[Document]:
        """The variant's documents that get a teacher LoRA: all, or the first `teacher_docs` per dataset."""
        n = v.size if v.config.teacher_docs is None else min(v.size, v.config.teacher_docs)
        return training_documents(list(self.datasets.values()), v.config.train_on, n, self.exclude)

    def _variant_id(self, v: Variant) -> str:
        return stable_hash({"variant": asdict(v.config), "base": self.hyper_base, "teacher": self.teacher_id,
                            "model": self.model, "docs": [d.id for d in self.training_docs(v)]})

    @property
    def teacher_dir(self) -> Path:
        return self.out / "stores" / f"teacher-{self.teacher_id}"

    def variant_dir(self, v: Variant) -> Path:
        return self.out / "hypernets" / f"{slug(v.name)}-{self._variant_ids[v.name]}"

    def generated_dir(self, v: Variant) -> Path:
        return self.out / "stores" / f"hyper-{slug(v.name)}-{self._variant_ids[v.name]}"

    def _dataset_identity(self, name: str) -> dict:
        return asdict(self.datasets[name].config)

    def cells(self) -> list[Cell]:
        """Every cell and check of the grid, in report order."""
        cfg = self.cfg
        common = {"model": self.model, "dtype": cfg.dtype, "max_new_tokens": cfg.max_new_tokens,
                  "answer_loss": cfg.answer_loss}
        out: list[Cell] = []
        for name in self.datasets:
            ds_id = {**common, "dataset": self._dataset_identity(name)}
            for method in cfg.methods:
                if method == "vanilla":
                    out.append(Cell("eval", name, method, identity={**ds_id, "method": method}))
                    continue
                variants = self.variants if method in HYPER_MODES else [None]
                for v in variants:
                    for k in cfg.top_k:
                        rules = cfg.compositions if method != "rag" and k > 1 else [None]
                        for rule in rules:
                            ident = {**ds_id, "method": method, "retriever": cfg.retriever, "top_k": k,
                                     "composition": rule}
                            if method in TEACHER_MODES:
                                ident["teacher"] = self.teacher_id
                            if v is not None:
                                ident["variant"] = self._variant_ids[v.name]
                            out.append(Cell("eval", name, method, v, k, rule, ident))
            if cfg.specificity:
                if any(m in TEACHER_MODES for m in cfg.methods) or self.variants:
                    out.append(Cell("specificity", name, "teacher",
                                    identity={**ds_id, "check": "specificity", "teacher": self.teacher_id}))
                for v in self.variants:
                    out.append(Cell("specificity", name, "hyper", v,
                                    identity={**ds_id, "check": "specificity", "variant": self._variant_ids[v.name]}))
        return out

    def cell_json(self, cell: Cell) -> Path:
        return self.out / "cells" / f"{cell.id}.json"

    # ---- retrieval -----------------------------------------------------------------------------------------

    def retriever(self, name: str):
        """The dataset's retriever (None for gold), its index saved in the results folder and reloaded."""
        if self.cfg.retriever == "gold":
            return None
        if name not in self._retrievers:
            from inference.retrieval import build_retriever, load_retriever

            ds = self.datasets[name]
            folder = self.out / "retrieval" / f"{slug(name)}-{self.cfg.retriever}-" \
                f"{stable_hash(sorted(d.id for d in ds.corpus))}"
            if (folder / "meta.json").exists():
                self._retrievers[name] = load_retriever(folder)
            else:
                self._retrievers[name] = build_retriever(self.cfg.retriever, ds.corpus)
                self._retrievers[name].save(folder)
        return self._retrievers[name]

    def retrieved(self, name: str, k: int) -> list[list[str]]:
        """Document ids per evaluated question at top-k (what the cells' Answerer will use)."""
        key = (name, k)
        if key not in self._retrieved:
            from inference.answer import Retrieval

            ds = self.datasets[name]
            finder = Retrieval(ds.corpus_by_id, self.retriever(name), k, gold=self.cfg.retriever == "gold")
            self._retrieved[key] = finder.documents_for(ds.questions)
        return self._retrieved[key]

    def own_documents(self, name: str) -> set[str]:
        from hyperprag.core.data import corpus_index
        from inference.checks import own_document

        ds = self.datasets[name]
        index = corpus_index(ds.corpus)
        return {o for q in ds.questions if (o := own_document(q, index)) is not None}

    def _cell_documents(self, cell: Cell) -> set[str]:
        if cell.kind == "specificity":
            return self.own_documents(cell.dataset)
        if cell.method == "vanilla" or cell.method == "rag":
            return set()
        return {d for ids in self.retrieved(cell.dataset, cell.top_k) for d in ids}

    # ---- heavy stages ----------------------------------------------------------------------------------------

    def base(self):
        """(model, tokenizer) for answering and parameterizing, loaded once."""
        if self._base is None:
            from hyperprag.core.models import load_base_model

            self._base = load_base_model(self.model, dtype=self.cfg.dtype, device=self.device)
        return self._base

    def teacher_store(self):
        from hyperprag.core.store import AdapterStore

        return AdapterStore.open(self.teacher_dir, expect_base_model=self.model)

    def train_teachers(self, doc_ids: set[str]) -> dict:
        """Teacher LoRAs for the documents not yet in the shared store (training/teacher.py train_corpus)."""
        from training.teacher import train_corpus

        have = set(self.teacher_store().ids()) if (self.teacher_dir / "manifest.json").exists() else set()
        by_id = {d.id: d for ds in self.datasets.values() for d in [*ds.corpus, *ds.pool]}
        todo = [by_id[i] for i in sorted(doc_ids - have)]
        if not todo:
            return {"trained": 0}
        corpus = self.out / "stores" / f"teacher-{self.teacher_id}.todo.jsonl"
        write_jsonl(corpus, todo)
        summary = train_corpus(self.model, corpus, self.teacher_dir, self.teacher, augment=self.cfg.augment,
                               augment_cache=self.out / "cache" / "augment", on_error="skip", device=self.device,
                               progress=False)
        if summary.get("failed"):
            log.warning("teacher training failed for %d documents (they answer with no adapter): %s",
                        len(summary["failed"]), summary["failed"][:3])
        return summary

    def variant_yaml(self, v: Variant) -> dict:
        """The variant's complete `hyperprag train` config (shared base, then the variant's overrides)."""
        vc, root = v.config, self.variant_dir(v)
        over: dict = {"model": dict(vc.model), "data": dict(vc.data), "trainer": dict(vc.trainer)}
        if vc.hypernet:
            over["model"]["hypernet"] = vc.hypernet
        if vc.loss_weights:
            over["model"]["loss_weights"] = vc.loss_weights
        if vc.param_loss is not None:
            over["model"]["param_loss"] = vc.param_loss
        if vc.encoder:
            over["data"]["encoder"] = vc.encoder
        if vc.max_steps is not None:
            over["trainer"]["max_steps"] = vc.max_steps
            over["trainer"].setdefault("max_epochs", -1)
        if vc.max_epochs is not None:
            over["trainer"]["max_epochs"] = vc.max_epochs
        cfg = _deep_merge(self.hyper_base, over)
        cfg.setdefault("seed_everything", 0)
        spec = self.teacher.spec.to_dict()
        if spec.get("layers") is None:
            spec.pop("layers", None)
        model, data, trainer = (cfg.setdefault(s, {}) for s in ("model", "data", "trainer"))
        # the generated layout is the teacher's unless the variant names its own (token-level networks:
        # e.g. rank 18 on down_proj); the teacher layout for the KL / parameter losses comes from the store
        model.update(base_model=self.model, spec=vc.model.get("spec", spec), export_dir=str(root / "hypernet"))
        data.pop("base_model", None)  # linked from model.base_model
        if vc.teacher_docs is not None:  # documents without a teacher train the function losses alone
            data["require_teacher"] = False
        data.update(corpus=str(root / "corpus.jsonl"), teacher_store=str(self.teacher_dir),
                    augmentations=str(self.out / "cache" / "augment"), augment_method=self.cfg.augment,
                    embedding_cache_dir=str(self.out / "cache" / "embeddings"))
        trainer.update(default_root_dir=str(root), enable_progress_bar=False, enable_model_summary=False,
                       logger={"class_path": "pytorch_lightning.loggers.CSVLogger",
                               "init_args": {"save_dir": str(root), "name": "logs"}})
        return cfg

    def train_variant(self, v: Variant) -> Path:
        """Train (or resume, or reuse) the variant's hypernetwork through `hyperprag train`'s code path."""
        import yaml

        from hypernet.checkpoint import load_hypernet
        from training.hypernet_cli import run_train

        root = self.variant_dir(v)
        done = root / "done.json"
        if done.exists() and (root / "hypernet" / "config.json").exists():
            return root / "hypernet"
        docs = self.training_docs(v)
        store = self.teacher_store()
        taught = [d for d in docs if d.id in store]
        usable = docs if v.config.teacher_docs is not None else taught
        if not usable:
            raise RuntimeError(f"variant {v.name!r}: none of its {len(docs)} training documents has a teacher "
                               f"adapter in {self.teacher_dir}")
        root.mkdir(parents=True, exist_ok=True)
        write_jsonl(root / "corpus.jsonl", usable)
        path = root / "train.yaml"
        atomic_write_text(path, f"# hyperprag train --config {path}\n"
                                + yaml.safe_dump(self.variant_yaml(v), sort_keys=False))
        args = ["--config", str(path)]
        if (root / "checkpoints" / "last.ckpt").exists():
            args += ["--ckpt_path", "last"]
        t0 = time.perf_counter()
        exported = run_train(args)
        seconds = time.perf_counter() - t0
        meta = load_hypernet(exported).meta
        teacher_s = [store.meta(d.id).get("seconds") for d in taught]
        teacher_s = [s for s in teacher_s if s is not None]
        atomic_write_json(done, {"variant": v.name, "group": v.group, "size": v.size,
                                 "train_on": v.config.train_on or list(self.datasets), "documents": len(usable),
                                 "teacher_documents": len(taught),
                                 "steps": meta.get("global_step"), "seconds": seconds,
                                 "teacher_seconds_per_doc": sum(teacher_s) / len(teacher_s) if teacher_s else None,
                                 "hypernet": str(exported)})
        return exported

    def generate(self, v: Variant, doc_ids: set[str]) -> None:
        """Adapters of the variant for the documents its cells use, into its generated store (timed)."""
        from hyperprag.core.store import AdapterStore
        from inference.parameterize import parameterize_corpus

        folder = self.generated_dir(v)
        have = set(AdapterStore.open(folder).ids()) if (folder / "manifest.json").exists() else set()
        by_id = {d.id: d for ds in self.datasets.values() for d in ds.corpus}
        todo = [by_id[i] for i in sorted(doc_ids - have)]
        if not todo:
            return
        base, tok = self.base()
        stats = parameterize_corpus(self.variant_dir(v) / "hypernet", todo, folder, base, tok,
                                    batch_size=self.cfg.parameterize_batch_size, progress=False)
        timing_path = folder / "parameterize.json"
        total = {"documents": 0, "encode_s": 0.0, "generate_s": 0.0, "write_s": 0.0}
        if timing_path.exists():
            total.update(json.loads(timing_path.read_text(encoding="utf-8")))
        total["documents"] += stats["generated"]
        for key in ("encode_s", "generate_s", "write_s"):
            total[key] += stats[key]
        atomic_write_json(timing_path, total)

    # ---- cells ---------------------------------------------------------------------------------------------

    def _source(self, store):
        """A store's adapters for this grid: on the answering device, the plain model (a zero adapter,
        counted as missing) for a document whose teacher training failed."""
        from inference.sources import StoreSource

        return StoreSource(store, device=self.device, on_missing="zero")

    def _answerer(self, cell: Cell):
        from hyperprag.core.store import AdapterStore
        from inference.answer import make_answerer

        ds = self.datasets[cell.dataset]
        base, tok = self.base()
        teacher = self._source(self.teacher_store()) if cell.method in TEACHER_MODES else None
        hyper = None
        if cell.method in HYPER_MODES:
            hyper = self._source(AdapterStore.open(self.generated_dir(cell.variant), expect_base_model=self.model))
        retriever = "gold" if self.cfg.retriever == "gold" else \
            None if cell.method == "vanilla" else self.retriever(cell.dataset)
        return make_answerer(base, tok, ds.corpus_by_id, retriever=retriever, teacher=teacher, hyper=hyper,
                             top_k=cell.top_k or 1, composition=cell.composition or "cat",
                             max_new_tokens=self.cfg.max_new_tokens, batch_size=self.cfg.batch_size)

    def _costs(self, cell: Cell, docs: set[str]) -> tuple[float | None, float | None]:
        """(offline seconds per document, bytes stored per document) of the cell's adapter source."""
        from hyperprag.core.store import AdapterStore

        if cell.method in TEACHER_MODES or (cell.kind == "specificity" and cell.method == "teacher"):
            store = self.teacher_store()
            secs = [store.meta(d).get("seconds") for d in docs if d in store]
            secs = [s for s in secs if s is not None]
            return (sum(secs) / len(secs) if secs else None), store.bytes_per_adapter()
        if cell.variant is not None:
            folder = self.generated_dir(cell.variant)
            t = json.loads((folder / "parameterize.json").read_text(encoding="utf-8"))
            per_doc = (t["encode_s"] + t["generate_s"]) / t["documents"] if t["documents"] else None
            return per_doc, AdapterStore.open(folder).bytes_per_adapter()
        return 0.0, None

    def _labels(self, cell: Cell) -> dict:
        v = cell.variant
        train_on = None if v is None else (v.config.train_on or list(self.datasets))
        return {"id": cell.id, "kind": cell.kind, "dataset": cell.dataset, "method": cell.method,
                "variant": None if v is None else v.name, "variant_group": None if v is None else v.group,
                "variant_size": None if v is None else v.size, "train_on": train_on,
                "out_of_domain": None if v is None else cell.dataset not in train_on,
                "top_k": cell.top_k, "composition": cell.composition, "settings": cell.identity}

    def run_cell(self, cell: Cell) -> dict:
        """Evaluate one cell (inference/evaluate.py, resumable) and return its record."""
        from inference.evaluate import evaluate

        ds = self.datasets[cell.dataset]
        answerer = self._answerer(cell)
        metrics = evaluate(answerer, ds.questions, [cell.method], self.out / "cells" / cell.id,
                           batch_size=self.cfg.batch_size, with_nll=self.cfg.answer_loss, progress=False)[cell.method]
        docs = self._cell_documents(cell)
        offline, nbytes = self._costs(cell, docs)
        row = metrics["all"]
        missing = sorted(set().union(*(s.missing for s in (answerer.teacher, answerer.hyper) if s is not None)))
        return {**self._labels(cell), "n": row["n"], "em": row.get("em"), "f1": row.get("f1"), "acc": row.get("acc"),
                "contains": row.get("contains"), "answer_nll": row.get("answer_nll"),
                "latency_s_per_question": row["seconds_per_question"], "prompt_tokens": row["prompt_tokens"],
                "offline_s_per_doc": offline, "bytes_per_doc": nbytes, "documents": len(docs),
                "missing_adapters": missing, "metrics": metrics,
                "finished": datetime.now(UTC).isoformat(timespec="seconds")}

    def run_check(self, cell: Cell) -> dict:
        """Closed-book own-vs-other-vs-no adapter check (inference/checks.py)."""
        from hyperprag.core.data import corpus_index
        from hyperprag.core.store import AdapterStore
        from inference.checks import own_document, specificity_check

        ds = self.datasets[cell.dataset]
        store = self.teacher_store() if cell.method == "teacher" else \
            AdapterStore.open(self.generated_dir(cell.variant), expect_base_model=self.model)
        index = corpus_index(ds.corpus)
        questions = [q for q in ds.questions if (o := own_document(q, index)) is not None and o in store]
        own = {own_document(q, index) for q in questions}
        record = {**self._labels(cell), "n": len(questions), "documents": len(own),
                  "finished": datetime.now(UTC).isoformat(timespec="seconds")}
        if len(own) < 2:
            return {**record, "rows": {}, "skipped": "fewer than 2 documents with an adapter"}
        base, tok = self.base()
        corpus = ds.corpus_by_id
        rows = specificity_check(base, tok, questions, {i: corpus[i] for i in sorted(own)}, self._source(store),
                                 self.cfg.batch_size)
        return {**record, "rows": rows}

    # ---- the run -------------------------------------------------------------------------------------------

    def run(self, resume: bool = True) -> dict:
        started = time.perf_counter()
        cells = self.cells()
        pending = [c for c in cells if not (resume and self.cell_json(c).exists())]
        _stage(1, f"{len(cells)} cells and checks over {len(self.datasets)} datasets, {len(self.variants)} "
                  f"hypernetwork variants; {len(cells) - len(pending)} already finished")
        if pending:
            self._run_pending(pending, resume)
        else:
            for i in range(2, STAGES):
                _stage(i, "nothing to do")
        _stage(STAGES, f"report in {self.out}")
        from hyperprag.ablation.report import write_report

        summary = self.summary(cells, time.perf_counter() - started)
        write_report(self.out, summary)
        return summary

    def _run_pending(self, pending: list[Cell], resume: bool) -> None:
        need_teacher: set[str] = set()
        need_generated: dict[str, set[str]] = {}
        variants: dict[str, Variant] = {}
        for c in pending:
            docs = self._cell_documents(c)
            if c.method in TEACHER_MODES or (c.kind == "specificity" and c.method == "teacher"):
                need_teacher |= docs
            if c.variant is not None:
                variants[c.variant.name] = c.variant
                need_generated.setdefault(c.variant.name, set()).update(docs)
        for v in variants.values():
            if not (self.variant_dir(v) / "done.json").exists():
                need_teacher |= {d.id for d in self.teacher_docs(v)}
        _stage(2, f"teacher LoRAs: {len(need_teacher)} documents needed ({self.teacher_dir.name})")
        if need_teacher:
            summary = self.train_teachers(need_teacher)
            if summary.get("trained"):
                print(f"      trained {summary['trained']} in {summary['seconds']:.0f}s", flush=True)
        _stage(3, f"hypernetworks: {len(variants)} variants")
        for v in variants.values():
            print(f"      {v.name}: {self.variant_dir(v).name}", flush=True)
            self.train_variant(v)
        _stage(4, "generated adapters for the evaluated documents")
        for name, docs in need_generated.items():
            self.generate(variants[name], docs)
        _stage(5, f"answering: {len(pending)} cells and checks")
        for i, c in enumerate(pending, 1):
            t0 = time.perf_counter()
            if not resume:
                shutil.rmtree(self.out / "cells" / c.id, ignore_errors=True)
            record = self.run_cell(c) if c.kind == "eval" else self.run_check(c)
            atomic_write_json(self.cell_json(c), record)
            print(f"      [{i}/{len(pending)}] {c.id} ({time.perf_counter() - t0:.1f}s)", flush=True)

    def summary(self, cells: list[Cell], seconds: float) -> dict:
        """Everything the report shows: finished cells and checks, variants, the resolved config."""
        records = [json.loads(self.cell_json(c).read_text(encoding="utf-8")) for c in cells
                   if self.cell_json(c).exists()]
        variants = []
        for v in self.variants:
            done = self.variant_dir(v) / "done.json"
            info = json.loads(done.read_text(encoding="utf-8")) if done.exists() else {"variant": v.name}
            info["folder"] = str(self.variant_dir(v).relative_to(self.out))
            variants.append(info)
        return {"config": self.resolved_config(), "cells": [r for r in records if r["kind"] == "eval"],
                "specificity": [r for r in records if r["kind"] == "specificity"], "variants": variants,
                "missing_cells": [c.id for c in cells if not self.cell_json(c).exists()],
                "seconds": seconds, "updated": datetime.now(UTC).isoformat(timespec="seconds")}

    def resolved_config(self) -> dict:
        return {**self.cfg.to_dict(), "config_file": str(self.config_path) if self.config_path else None,
                "model": self.model, "out": str(self.out),
                "datasets": [asdict(ds.config) for ds in self.datasets.values()],
                "dataset_sizes": {n: {"evaluated": len(ds.questions), "corpus": len(ds.corpus),
                                      "training_pool": len(ds.pool)} for n, ds in self.datasets.items()},
                "teacher": self.teacher.to_dict(), "teacher_id": self.teacher_id,
                "variants": [{**asdict(v.config), "name": v.name, "group": v.group, "size": v.size,
                              "id": self._variant_ids[v.name], "folder": str(self.variant_dir(v))}
                             for v in self.variants],
                "cells": [c.id for c in self.cells()]}


def _device(name: str) -> str:
    """auto -> cuda when a GPU is visible, else cpu."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _model_name(name: str) -> str:
    """An embedded name or hub id as given; a local folder as an absolute path (what stores record)."""
    from hyperprag.core.models import EMBEDDED

    if name in EMBEDDED:
        return name
    path = resolve_path(name)
    return str(path) if path.exists() else name


def run_ablation(config: str, out: str | None = None, resume: bool = True) -> dict:
    """Run (or finish) the grid of `config` into `out` (default: the config's `out`); returns the summary.

    Finished cells are skipped unless `resume` is False, which recomputes every cell and check (answers
    and metrics) while reusing trained teacher LoRAs and hypernetworks, which are keyed by their settings.
    """
    from filelock import FileLock, Timeout

    config_path = Path(config)
    cfg = load_config(config_path)
    out_dir = Path(out or cfg.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / ".ablation.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeError(f"another ablation is running in {out_dir} (lock {out_dir / '.ablation.lock'})") from None
    (out_dir / "logs").mkdir(exist_ok=True)
    handler = logging.FileHandler(out_dir / "logs" / "ablation.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(min(old_level or logging.INFO, logging.INFO))
    try:
        atomic_write_text(out_dir / "config.yaml", config_path.read_text(encoding="utf-8"))
        ablation = Ablation(cfg, out_dir, config_path.resolve())
        atomic_write_json(out_dir / "config.resolved.json", ablation.resolved_config())
        log.info("ablation %s -> %s (resume=%s)", config_path, out_dir, resume)
        return ablation.run(resume=resume)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        lock.release()
