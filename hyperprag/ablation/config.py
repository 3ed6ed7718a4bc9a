"""The ablation grid's configuration: typed dataclasses read from one YAML file (configs/ablation/*.yaml).

Every field has a one-line doc (the string under it). Loading parses and type-checks with jsonargparse,
as the rest of the command line does, and names the file, the list item and the field of anything wrong
in one line, e.g. ``configs/ablation/small.yaml: datasets[1] (popqa): Parser key "limit": ...``.
Relative paths are resolved against the current directory, falling back to the folder that holds
configs/ (hyperprag/core/paths.py), so ``../shared/data/...`` works from the repository root and from
anywhere else, and ``configs/teacher/cpu.yaml`` also from an installed package.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from hyperprag.core.data import GOLD
from hyperprag.core.errors import InputError
from hyperprag.core.paths import resolve_path
from inference.modes import HYPER_MODES, MODES

RETRIEVERS = ("gold", "bm25", "dense")


class ConfigError(InputError, ValueError):
    """A bad ablation config; the message names the file and the field."""


@dataclass
class DatasetConfig:
    """One evaluation dataset, and the questions whose gold passages are its hypernetwork training pool."""

    name: str
    """Label used in cell ids, tables and plots (and in a variant's `train_on`)."""
    questions: str
    """Question JSONL to evaluate (the schema of ../shared/data/README.md)."""
    corpus: str | None = None
    """Corpus JSONL to retrieve from; None = pool the passages of every question of `questions`."""
    offset: int = 0
    """Evaluate the questions of `questions` from this index on."""
    limit: int | None = None
    """Evaluate at most this many questions (None = to the end)."""
    train_questions: str | None = None
    """Question JSONL whose gold passages are the training pool; None = `questions` itself (split by index)."""
    train_offset: int = 0
    """The training pool starts at this question index of `train_questions`."""
    train_limit: int | None = None
    """Training-pool questions (None = to the end); must not overlap the evaluated range of the same file."""
    gold: str = "supporting"
    """A question's gold documents: its `supporting` passages (all of them if none is marked) or `all`."""

    def __post_init__(self) -> None:
        if self.gold not in GOLD:
            raise ValueError(f"gold must be one of {GOLD}, got {self.gold!r}")
        for name in ("offset", "train_offset"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("limit", "train_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass
class VariantConfig:
    """One hypernetwork to train and evaluate; every field overrides the shared hypernetwork settings."""

    name: str
    """Label used in cell ids, tables and plots."""
    train_on: list[str] | None = None
    """Datasets (names) whose training pools it learns from; None = all. Other datasets are out of domain."""
    train_docs: int | list[int] = 16
    """Training documents per training dataset (the first N of its pool); a list makes one variant per size."""
    teacher_docs: int | None = None
    """Of those, the first N per dataset get teacher LoRAs and the rest train on the teacher-free losses
    (answer loss through the generated adapter, anchors): the corpus-scale setting; None = all have teachers."""
    hypernet: dict = field(default_factory=dict)
    """HyperNetConfig fields (hypernet/config.py), e.g. {arch: dyprag} or {hidden: 128}."""
    encoder: dict = field(default_factory=dict)
    """EncoderSpec fields: {kind: sentence} (MiniLM) or {kind: llm, pooling: last}."""
    loss_weights: dict = field(default_factory=dict)
    """LossWeights fields: {param, kl, lm}."""
    param_loss: str | None = None
    """Parameter loss against the teacher: coord | deltaw (None = the shared setting)."""
    max_steps: int | None = None
    """Optimizer steps (None = the shared setting; with it set, epochs are unbounded)."""
    max_epochs: int | None = None
    """Epochs over the training documents (None = the shared setting)."""
    model: dict = field(default_factory=dict)
    """Other HyperLoRAModule arguments (lr, warmup_steps, schedule, kl_positions, em_batches, ...)."""
    data: dict = field(default_factory=dict)
    """Other HyperDataModule arguments (batch_size, qa_per_doc, val_fraction, sequence_kinds, ...)."""
    trainer: dict = field(default_factory=dict)
    """Other Lightning Trainer arguments (check_val_every_n_epoch, gradient_clip_val, ...)."""

    def __post_init__(self) -> None:
        from hypernet.config import PARAM_LOSSES, EncoderSpec, HyperNetConfig, LossWeights

        HyperNetConfig.from_dict(self.hypernet)
        EncoderSpec.from_dict(self.encoder)
        known = {f.name for f in fields(LossWeights)}
        if set(self.loss_weights) - known:
            raise ValueError(f"loss_weights: unknown fields {sorted(set(self.loss_weights) - known)}; known {sorted(known)}")
        if self.param_loss is not None and self.param_loss not in PARAM_LOSSES:
            raise ValueError(f"param_loss must be one of {PARAM_LOSSES}, got {self.param_loss!r}")
        if self.teacher_docs is not None and self.teacher_docs < 0:
            raise ValueError(f"teacher_docs must be >= 0 (or null), got {self.teacher_docs}")
        sizes = self.train_docs if isinstance(self.train_docs, list) else [self.train_docs]
        if not sizes or any(n < 1 for n in sizes):
            raise ValueError(f"train_docs must be >= 1 (or a non-empty list of such), got {self.train_docs!r}")


@dataclass
class AblationConfig:
    """The whole grid: datasets x methods x hypernetwork variants x top-k x composition rules."""

    datasets: list[DatasetConfig]
    """Evaluation datasets with their training-pool split."""
    model: str = "smollm2-135m"
    """Base model: an embedded name, a local folder or a hub id."""
    dtype: str = "float32"
    """Base-model dtype for answering: float32 | bfloat16."""
    device: str = "auto"
    """Where teachers train and questions are answered: auto (cuda if available) | cpu | cuda."""
    out: str = "runs/ablation"
    """Results folder (`hyperprag ablate --out` overrides it)."""
    methods: list[str] = field(default_factory=lambda: list(MODES))
    """Answering modes: vanilla, rag, prag, prag-combine, hyper, hyper-combine."""
    retriever: str = "gold"
    """Where a question's documents come from: gold (its own passages), bm25 or dense (over the corpus)."""
    top_k: list[int] = field(default_factory=lambda: [1])
    """Documents per question; one cell per value."""
    compositions: list[str] = field(default_factory=lambda: ["cat"])
    """How top-k adapters combine (cat, sum, mean, cat-mean); only cells with top_k > 1 vary it."""
    teacher: str | dict | None = None
    """TeacherConfig: a configs/teacher YAML path or an inline mapping; None = the defaults for the model."""
    augment: str = "rules"
    """Augmentation of teacher documents: rules | llm | rules+llm."""
    hypernet_config: str | None = None
    """A configs/hypernet YAML whose model/data/trainer sections every variant starts from."""
    hypernet_defaults: dict = field(default_factory=dict)
    """model/data/trainer/checkpoint sections applied to every variant after `hypernet_config`."""
    variants: list[VariantConfig] = field(default_factory=list)
    """Hypernetwork variants (needed by the hyper methods)."""
    specificity: bool = True
    """Closed-book check: own document's adapter vs another's vs none, for the teacher and each variant."""
    batch_size: int = 8
    """Questions answered together (not part of a cell's identity)."""
    max_new_tokens: int = 20
    """Greedy tokens generated per answer."""
    answer_loss: bool = True
    """Also compute each cell's mean gold-answer loss (answer_nll)."""
    parameterize_batch_size: int = 32
    """Documents per hypernetwork forward when generating adapters."""

    def __post_init__(self) -> None:
        from hyperprag.core.compose import RULES

        bad = [m for m in self.methods if m not in MODES]
        if bad:
            raise ValueError(f"methods: unknown {bad}; choose from {MODES}")
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {RETRIEVERS}, got {self.retriever!r}")
        if not self.top_k or any(k < 1 for k in self.top_k):
            raise ValueError(f"top_k must be a non-empty list of values >= 1, got {self.top_k}")
        bad = [c for c in self.compositions if c not in RULES]
        if bad or not self.compositions:
            raise ValueError(f"compositions: unknown {bad}; choose from {RULES}")
        names = [d.name for d in self.datasets]
        if not names:
            raise ValueError("datasets: at least one is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"datasets: names must be unique, got {names}")
        vnames = [v.name for v in self.variants]
        if len(set(vnames)) != len(vnames):
            raise ValueError(f"variants: names must be unique, got {vnames}")
        for v in self.variants:
            unknown = sorted(set(v.train_on or []) - set(names))
            if unknown:
                raise ValueError(f"variant {v.name!r}: train_on names unknown datasets {unknown} (have {names})")
        if any(m in HYPER_MODES for m in self.methods) and not self.variants:
            raise ValueError("methods hyper/hyper-combine need at least one entry in `variants`")

    def teacher_config(self):
        """The resolved TeacherConfig."""
        from training.teacher import TeacherConfig

        if self.teacher is None:
            return TeacherConfig.for_model(self.model)
        if isinstance(self.teacher, str):
            return TeacherConfig.from_yaml(resolve_path(self.teacher))
        return TeacherConfig.from_dict(dict(self.teacher))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Variant:
    """A variant with one training size (a `train_docs` list expands into several)."""

    name: str
    """Unique name, `<group>-n<size>` when the group has several sizes."""
    group: str
    """The configured variant's name (learning curves join its sizes)."""
    size: int
    """Teacher documents per training dataset."""
    config: VariantConfig
    """The configured variant (train_docs replaced by `size`)."""


def expand_variants(variants: list[VariantConfig]) -> list[Variant]:
    """One Variant per (variant, training size)."""
    out = []
    for v in variants:
        sizes = v.train_docs if isinstance(v.train_docs, list) else [v.train_docs]
        for n in sizes:
            name = f"{v.name}-n{n}" if isinstance(v.train_docs, list) and len(sizes) > 1 else v.name
            out.append(Variant(name, v.name, int(n), VariantConfig(**{**asdict(v), "train_docs": int(n)})))
    return out


# ---- paths, hashing, slugs ------------------------------------------------------------------------------

def stable_hash(obj, n: int = 10) -> str:
    """A short hex digest of a JSON-able object (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def slug(text: str) -> str:
    """File-name-safe text."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "x"


# ---- loading -----------------------------------------------------------------------------------------------

def _one_line(err: Exception) -> str:
    """jsonargparse's indented multi-line message as one line, with `<class 'int'>` shown as `int`."""
    return re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", " ".join(str(err).split()))


def build(cls, data, where: str):
    """A `cls` dataclass from a mapping, parsed and type-checked by jsonargparse (nested dataclasses too),
    then checked by its own __post_init__; any error is a ConfigError naming `where` and the field."""
    from jsonargparse import ArgumentError, ArgumentParser

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls)
    try:
        return cls(**parser.instantiate(parser.parse_object(data)).as_dict())
    except (ArgumentError, ValueError, TypeError) as err:  # jsonargparse's checks, or the dataclass's own
        raise ConfigError(f"{where}: {_one_line(err)}") from None


def load_config(path: str | Path) -> AblationConfig:
    """Read and check an ablation YAML file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: ablation config not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_one_line(err)})") from err
    for key, cls in (("datasets", DatasetConfig), ("variants", VariantConfig)):  # name the list item in errors
        items = data.get(key) if isinstance(data, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            label = f"[{i}]" + (f" ({item['name']})" if isinstance(item, dict) and "name" in item else "")
            build(cls, item, f"{path}: {key}{label}")
    return build(AblationConfig, data, str(path))
