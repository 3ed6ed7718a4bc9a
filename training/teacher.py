"""The PRAG teacher: one LoRA per document, trained on that document's QA sequences, K documents at once.

K documents share one forward/backward pass: every document has its own leaf tensors A_d[m] [L, r, in],
B_d[m] [L, out, r] (all from the same init), each sequence gathers its document's matrices into a
per-example batched adapter (``apply_lora`` hooks), and the loss is the sum over documents of each
document's own mean token loss. A document's gradient therefore depends only on its own sequences, and
AdamW (elementwise, one parameter group per document) makes the K trainings exactly the K sequential
ones: same init, same sequence order, same per-document learning-rate schedule and gradient clipping.
A document that has run out of steps gets no gradient (``grad=None``), so AdamW neither counts a step
for it nor moves its moments or weights. ``tests/training/test_teacher.py`` checks the equality against
sequential PEFT training.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperprag.core.data import Document
from hyperprag.core.fields import from_known_fields
from hyperprag.core.lm import target_logits
from hyperprag.core.lora import FFN_MODULES, LoraSpec, LoraWeights, init_lora, target_shapes
from hyperprag.core.shards import parse_shard, shard_of  # noqa: F401  (re-exported for callers)
from training.sequences import (
    ANCHOR_QUESTIONS,
    IGNORE,
    QA_KINDS,
    Example,
    SequenceOptions,
    build_examples,
    collate,
)

SCHEDULES = ("constant", "cosine", "linear")
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
ON_NONFINITE = ("stop", "skip")
log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A document's loss or gradient became NaN/inf during teacher training; the message names the step and
    the documents."""


@dataclass
class TeacherConfig:
    """How each document's LoRA is trained (recorded in the adapter store's manifest)."""

    rank: int = 2
    """LoRA rank r."""
    alpha: float = 32.0
    """LoRA alpha; the update is scaled by alpha / rank."""
    target_modules: tuple[str, ...] = FFN_MODULES
    """Module-name suffixes that get an adapter: the FFN by default; add q/k/v/o_proj for attention."""
    epochs: int = 1
    """Passes over each document's sequences."""
    lr: float = 3e-4
    """Peak AdamW learning rate."""
    schedule: str = "constant"
    """Learning-rate schedule over each document's own steps: constant | cosine | linear (decay to 0)."""
    warmup_ratio: float = 0.0
    """Fraction of each document's steps spent warming the learning rate up linearly from 0."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    batch_size: int = 4
    """Sequences of one document per optimizer step (one document's micro-batch)."""
    shuffle: bool = True
    """Reshuffle each document's sequences every epoch (seeded by `seed` and the epoch)."""
    answer_only: bool = True
    """Loss only on the answer tokens of QA sequences; False trains on the whole sequence."""
    kinds: tuple[str, ...] = QA_KINDS
    """Sequence kinds: qa_passage, qa_rewrite, qa_closed, lm_passage, lm_rewrite (training/sequences.py)."""
    answers: tuple[str, ...] = ("short",)
    """Answer styles, one sequence each: short, full (short answer followed by the full sentence)."""
    max_qa: int | None = None
    """Use at most this many QA pairs per document; None = all the augmentation made."""
    max_qa_per_answer: int | None = None
    """Keep at most this many QA pairs per distinct answer (one question per fact = 1); None = all."""
    max_rewrites: int | None = None
    """Use at most this many rewrites per document; None = all."""
    docs_per_step: int = 8
    """K: documents trained together in one forward/backward (results do not depend on it)."""
    max_batch_tokens: int = 2048
    """Padded tokens per forward pass; a larger step is split into chunks whose gradients add up to the
    same step (peak memory is ~2 MB per token for SmolLM2-135M in float32: 9.3 GB measured at 4096)."""
    max_length: int = 512
    """Longest training sequence in tokens (in-context passages are shortened to fit)."""
    anchors: int = 0
    """Per document, this many general questions answered with the base model's own greedy answer
    (self-distillation) are trained too, so the adapter leaves unrelated questions alone; 0 = off."""
    anchor_loss: str = "ce"
    """How anchors are trained: ce = cross-entropy on the base model's greedy answer, averaged with the
    document's own tokens; kl = KL(base || adapted) at every anchor position, averaged on its own and
    added with weight `anchor_weight` (a soft, denser constraint: the whole distribution, prompt included)."""
    anchor_weight: float = 1.0
    """Weight of the anchor KL term (anchor_loss = kl)."""
    anchors_per_epoch: int | None = None
    """Train this many of a document's `anchors` each epoch, rotating through them, so every anchor is still
    seen over the run at a fraction of the tokens; None = all of them every epoch."""
    dtype: str = "float32"
    """Base-model dtype for training (float32 | bfloat16); the LoRA weights stay float32."""
    seed: int = 0
    """Seed of the shared LoRA init and the sequence shuffling."""
    grad_clip: float | None = None
    """Clip each document's gradient to this global norm (per document, as sequential training would)."""
    on_nonfinite: str = "stop"
    """A NaN/inf loss or gradient: stop (raise, naming the step and documents) | skip (drop that document's
    update for that step, logged and counted in its `skipped_steps`)."""

    def __post_init__(self) -> None:
        for name in ("alpha", "lr", "weight_decay", "warmup_ratio", "anchor_weight"):  # YAML reads "3e-4" as a string
            setattr(self, name, float(getattr(self, name)))
        if self.grad_clip is not None:
            self.grad_clip = float(self.grad_clip)
        self.target_modules = tuple(self.target_modules)
        self.kinds = tuple(self.kinds)
        self.answers = tuple(self.answers)
        self.betas = tuple(float(b) for b in self.betas)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TeacherConfig.schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"TeacherConfig.on_nonfinite {self.on_nonfinite!r} is not one of {ON_NONFINITE}")
        for name in ("epochs", "batch_size", "docs_per_step", "rank", "anchors_per_epoch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"TeacherConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"TeacherConfig.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        self.sequence_options()  # validates kinds / answers / max_length

    @property
    def spec(self) -> LoraSpec:
        return LoraSpec(rank=self.rank, alpha=self.alpha, target_modules=self.target_modules)

    def sequence_options(self) -> SequenceOptions:
        return SequenceOptions(kinds=self.kinds, answers=self.answers, max_qa=self.max_qa,
                               max_qa_per_answer=self.max_qa_per_answer,
                               max_rewrites=self.max_rewrites, answer_only=self.answer_only,
                               max_length=self.max_length, anchors=self.anchors, anchor_loss=self.anchor_loss)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TeacherConfig:
        return from_known_fields(cls, d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TeacherConfig:
        """Read a configs/teacher/*.yaml file (flat mapping of TeacherConfig fields)."""
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of TeacherConfig fields, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err

    @classmethod
    def for_model(cls, name: str, **overrides) -> TeacherConfig:
        """Defaults measured to inject knowledge into an embedded model (benchmarks/injection.py)."""
        return cls(**{**MODEL_DEFAULTS.get(name, {}), **overrides})


# Settings chosen with benchmarks/injection.py (configs/teacher/<model>.yaml hold the same values and the
# measured numbers): closed-book QA, one question per fact, 10 epochs at 1e-3, anchor questions. SmolLM2's
# adapters broke general answers with 4 cross-entropy anchors (contains 1.00 -> 0.33); 16 KL anchors at
# weight 10 kept 11 of 12 in the 4-document sweep and 12 of 12 on the 20 unseen demo documents, at ~1.5x the
# training time.
_EMBEDDED_RECIPE = dict(kinds=("qa_closed",), max_qa_per_answer=1, epochs=10, lr=1e-3, batch_size=8, anchors=4)
MODEL_DEFAULTS: dict[str, dict] = {
    "smollm2-135m": dict(_EMBEDDED_RECIPE, anchors=16, anchor_loss="kl", anchor_weight=10.0),
    "gemma3-270m": dict(_EMBEDDED_RECIPE),
}


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based) of `total`; transformers' formulas."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def document_plan(examples: Sequence[Example], config: TeacherConfig) -> list[list[int]]:
    """One document's optimizer steps as lists of example indices: epochs x micro-batches, in order.

    With `anchors_per_epoch`, epoch e keeps the document's anchors number e*n .. e*n+n-1 (wrapping) and
    every other sequence.
    """
    anchors = [i for i, ex in enumerate(examples) if ex.kind == "anchor"]
    per_epoch = config.anchors_per_epoch
    plan = []
    for epoch in range(config.epochs):
        chosen = list(range(len(examples)))
        if per_epoch is not None and len(anchors) > per_epoch:
            kept = {anchors[(epoch * per_epoch + j) % len(anchors)] for j in range(per_epoch)}
            chosen = [i for i in chosen if examples[i].kind != "anchor" or i in kept]
        if config.shuffle:
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            chosen = [chosen[j] for j in torch.randperm(len(chosen), generator=gen).tolist()]
        plan.extend(chosen[i:i + config.batch_size] for i in range(0, len(chosen), config.batch_size))
    return plan


def token_losses(model: nn.Module, batch: dict[str, Tensor], kl_rows: Tensor | None = None,
                 base_logprobs: Tensor | None = None, adapter: tuple[LoraSpec, LoraWeights] | None = None,
                 groups: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Loss of every target token ([n]) and the batch row it belongs to ([n]).

    Cross-entropy, except in the rows flagged by `kl_rows` ([b] bool), whose targets get
    KL(base || model) against `base_logprobs` ([n_kl, V], those rows' target positions in row-major order,
    from `AnchorLogprobs` or `base_target_logprobs`). The LM head runs only on target positions
    (answer-only loss needs a few tokens per sequence instead of the full vocabulary at every position).
    With `adapter` = (spec, one adapter per document) and `groups` ([b], each row's document), the rows of a
    document compute their shared chat prefix once (hyperprag/core/lm.py); otherwise the decoder runs
    without an attention mask: batches are right-padded, so causal attention never lets a real token see
    padding.
    """
    mask = batch.get("attention_mask") if groups is not None else None
    logits, targets, rows = target_logits(model, batch["input_ids"], batch["labels"], mask, adapter, groups)
    loss = F.cross_entropy(logits, targets, reduction="none")
    if kl_rows is not None and base_logprobs is not None:
        on = kl_rows[rows]  # [n]
        kl = F.kl_div(F.log_softmax(logits[on], -1), base_logprobs, log_target=True, reduction="none").sum(-1)
        loss = loss.masked_scatter(on, kl)
    return loss, rows


@torch.no_grad()
def base_target_logprobs(model: nn.Module, batch: dict[str, Tensor], rows: Tensor) -> Tensor:
    """The base model's log-probabilities at the target positions of batch rows `rows` ([b] bool): [n_kl, V]."""
    logits, _, _ = target_logits(model, batch["input_ids"][rows], batch["labels"][rows])
    return F.log_softmax(logits, -1)


class AnchorLogprobs:
    """The base model's log-probabilities at an anchor sequence's targets, computed once per sequence.

    Anchor sequences repeat every epoch and across documents (a pool of ~50 general questions), and the
    base model never changes, so their KL targets are computed the first time and reused: the same numbers
    as recomputing them every step. Memory: targets x vocabulary floats per distinct anchor (SmolLM2: ~50
    targets x 49k = 10 MB each, ~0.5 GB for the whole pool).
    """

    def __init__(self, model: nn.Module):
        self.model, self.cache = model, {}

    def __call__(self, batch: dict[str, Tensor], rows: Tensor) -> Tensor:
        """[n_kl, V] for the flagged rows ([b] bool), in row-major target order, as base_target_logprobs."""
        idx = rows.nonzero().flatten().tolist()
        keys = {i: tuple(batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()) for i in idx}
        missing = [i for i in idx if keys[i] not in self.cache]
        if missing:
            todo = torch.zeros_like(rows)
            todo[missing] = True
            counts = (batch["labels"][missing][:, 1:] != IGNORE).sum(1).tolist()
            for i, part in zip(missing, base_target_logprobs(self.model, batch, todo).split(counts), strict=True):
                self.cache[keys[i]] = part
        return torch.cat([self.cache[keys[i]] for i in idx])


def train_group(model: nn.Module, examples: Sequence[Sequence[Example]], config: TeacherConfig, pad_id: int,
                init: LoraWeights | None = None, doc_ids: Sequence[str] | None = None,
                on_step: Callable[[int, int], None] | None = None) -> tuple[list[LoraWeights], list[dict]]:
    """Train one adapter per entry of `examples` (one list per document) together; exact per document.

    `init` (unbatched) overrides the seeded PEFT-style init. Returns the adapters and per-document stats.
    `on_step(done, total)` is called after every optimizer step of the group (progress bars, ETAs).
    LoRA weights train in float32 (float64 when the base model is float64, as the exactness test uses).
    A NaN/inf loss or gradient follows `config.on_nonfinite`; `doc_ids` name the documents in its messages.
    """
    k = len(examples)
    spec = config.spec
    dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    if init is None:
        init = init_lora(target_shapes(model, spec), spec, seed=config.seed)
    params = [{n: {m: t.detach().clone().to(dtype).requires_grad_(True) for m, t in getattr(init, n).items()}
               for n in ("A", "B")} for _ in range(k)]  # params[d]["A"][m]: [L, r, in]
    groups = [{"params": [*p["A"].values(), *p["B"].values()], "lr": config.lr} for p in params]
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    plans = [document_plan(ex, config) for ex in examples]
    warmups = [math.ceil(config.warmup_ratio * len(p)) for p in plans]
    losses: list[list[float]] = [[] for _ in range(k)]
    skipped: list[list[int]] = [[] for _ in range(k)]
    names = list(doc_ids) if doc_ids is not None else [f"#{d}" for d in range(k)]
    device = next(model.parameters()).device
    kl = config.anchor_loss == "kl"
    token_weight = torch.tensor([1.0, config.anchor_weight], device=device, dtype=dtype)
    anchor_targets = AnchorLogprobs(model)
    total_steps = max(len(p) for p in plans)
    for step in range(total_steps):
        active = [d for d in range(k) if step < len(plans[d])]
        pos = {d: i for i, d in enumerate(active)}
        batch_ex = [examples[d][j] for d in active for j in plans[d][step]]
        batch = collate(batch_ex, pad_id)
        doc_pos = torch.tensor([pos[d] for d in active for _ in plans[d][step]], device=device)  # [b]
        opt.zero_grad(set_to_none=True)
        # each document's own mean token loss, summed over documents; chunks of the batch accumulate the
        # same gradient (every token's loss is divided by its document's target count of the whole step)
        # with KL anchors a document's loss is mean(own tokens) + anchor_weight * mean(anchor tokens);
        # otherwise the mean over all its target tokens (group 0 holds every token)
        kl_rows = torch.tensor([kl and ex.kind == "anchor" for ex in batch_ex], device=device)  # [b]
        group = kl_rows.long()
        counts = torch.zeros(2, len(active), dtype=torch.long, device=device).index_put_(
            (group, doc_pos), (batch["labels"][:, 1:] != IGNORE).sum(1).to(device), accumulate=True
        ).clamp_min(1)  # [2, k_active]
        sums = torch.zeros(len(active), device=device, dtype=dtype)
        for rows_ in _chunks(batch["input_ids"].shape[1], len(batch_ex), config.max_batch_tokens):
            sel = doc_pos[rows_]  # [c]: each sequence's document among the active ones
            weights = LoraWeights(  # one adapter per active document: [k, L, r, in] / [k, L, out, r]
                {m: torch.stack([params[d]["A"][m] for d in active]) for m in spec.target_modules},
                {m: torch.stack([params[d]["B"][m] for d in active]) for m in spec.target_modules})
            chunk = {n: batch[n][rows_].to(device) for n in ("input_ids", "labels", "attention_mask")}
            base_lp = anchor_targets(chunk, kl_rows[rows_]) if kl_rows[rows_].any() else None
            tok_loss, rows = token_losses(model, chunk, kl_rows[rows_], base_lp, adapter=(spec, weights), groups=sel)
            tok_group = group[rows_][rows]  # [n]
            scaled = tok_loss * token_weight[tok_group] / counts[tok_group, sel[rows]]
            part = torch.zeros(len(active), device=device, dtype=tok_loss.dtype).index_add(0, sel[rows], scaled)
            part.sum().backward()
            sums += part.detach().to(dtype)
        doc_loss = sums  # [k_active]
        bad = _nonfinite(active, doc_loss.detach(), opt)
        if bad and config.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"teacher step {step}: non-finite loss or gradient for document(s) {[names[d] for d in bad]} "
                f"(losses {[float(doc_loss[pos[d]].detach()) for d in bad]}); nothing of this group was kept. Set "
                "on_nonfinite: skip to drop such updates instead")
        for d in bad:
            log.warning("teacher step %d: non-finite loss %s for document %s; its update is skipped", step,
                        float(doc_loss[pos[d]].detach()), names[d])
            skipped[d].append(step)
            for p in opt.param_groups[d]["params"]:
                p.grad = None  # AdamW leaves parameters without a gradient (and their moments) untouched
        for d in active:
            if d in bad:
                continue
            losses[d].append(float(doc_loss[pos[d]].detach()))
            group = opt.param_groups[d]
            group["lr"] = config.lr * lr_factor(config.schedule, step, len(plans[d]), warmups[d])
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(group["params"], config.grad_clip)
        opt.step()  # documents without a gradient this step (finished) are skipped by AdamW entirely
        if on_step is not None:
            on_step(step + 1, total_steps)
    out, stats = [], []
    for d in range(k):
        steps_per_epoch = len(plans[d]) // config.epochs
        out.append(LoraWeights({m: t.detach() for m, t in params[d]["A"].items()},
                               {m: t.detach() for m, t in params[d]["B"].items()}))
        stats.append({"steps": len(plans[d]), "sequences": len(examples[d]),
                      "first_loss": _mean(losses[d][:steps_per_epoch]),
                      "final_loss": _mean(losses[d][-steps_per_epoch:]), "skipped_steps": skipped[d]})
    return out, stats


def _chunks(width: int, n_rows: int, max_tokens: int) -> list[slice]:
    """Row slices of a [n_rows, width] batch with at most max_tokens padded tokens each (>= 1 row)."""
    step = max(1, max_tokens // max(1, width))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def _nonfinite(active: list[int], doc_loss: Tensor, opt: torch.optim.Optimizer) -> list[int]:
    """The active documents whose loss (doc_loss[i] for active[i]) or any gradient is NaN/inf (one sync)."""
    flags = []
    for i, d in enumerate(active):
        grads = [p.grad for p in opt.param_groups[d]["params"] if p.grad is not None]
        ok = torch.isfinite(doc_loss[i])
        if grads:
            ok = ok & torch.stack([torch.isfinite(g).all() for g in grads]).all()
        flags.append(ok)
    return [d for d, ok in zip(active, torch.stack(flags).tolist(), strict=True) if not ok]


def _mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


@torch.no_grad()
def anchor_pool(model: nn.Module, tokenizer, questions: Sequence[str] = ANCHOR_QUESTIONS,
                max_new_tokens: int = 16) -> list[tuple[str, str]]:
    """(question, the base model's own short answer) for anchor sequences; cached on the model."""
    from hyperprag.core.metrics import extract_answer
    from hyperprag.core.prompts import answer_prompt

    cache = getattr(model, "_hyperprag_anchor_pool", {})
    key = (tuple(questions), max_new_tokens)
    if key not in cache:
        enc = tokenizer([answer_prompt(tokenizer, q) for q in questions], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        enc = enc.to(next(model.parameters()).device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        cache[key] = [(q, a) for q, a in zip(questions, map(extract_answer, texts), strict=True) if a]
        model._hyperprag_anchor_pool = cache
    return cache[key]


def document_examples(tokenizer, documents: Sequence[Document], augmentations: Sequence, config: TeacherConfig,
                      model: nn.Module | None = None) -> list[list[Example]]:
    """Tokenized training examples per document; a document with none is a clear error.

    `model` is needed only for anchor sequences (config.anchors > 0): their answers are its own.
    """
    if len(documents) != len(augmentations):
        raise ValueError(f"{len(documents)} documents but {len(augmentations)} augmentations")
    options = config.sequence_options()
    pool = anchor_pool(model, tokenizer) if config.anchors and model is not None else ()
    out = []
    for i, (doc, aug) in enumerate(zip(documents, augmentations, strict=True)):
        examples, _ = build_examples(tokenizer, doc, aug, options, doc_index=i, anchor_pool=pool)
        if not any(e.kind != "anchor" for e in examples):
            n_qa = len(getattr(aug, "qa", None) or [])
            raise ValueError(f"document {doc.id!r}: no training sequences (kinds {list(config.kinds)}, "
                             f"{n_qa} QA pairs, max_length {config.max_length})")
        out.append(examples)
    return out


def train_documents(model: nn.Module, tokenizer, documents: Sequence[Document], augmentations: Sequence,
                    config: TeacherConfig | None = None, on_group: Callable[[int], None] | None = None,
                    on_step: Callable[[int, int], None] | None = None) -> list[LoraWeights]:
    """One trained adapter per document (in input order), K = config.docs_per_step at a time.

    Documents are grouped by their number of optimizer steps, so a group rarely waits for a long one;
    results do not depend on the grouping. Each adapter's `meta` holds its steps, losses and seconds.
    `on_group(n)` is called after each group of n documents, `on_step(done, total)` after each optimizer
    step of a group (progress bars).
    """
    config = config or TeacherConfig()
    per_doc = document_examples(tokenizer, documents, augmentations, config, model)
    steps = [len(document_plan(ex, config)) for ex in per_doc]
    order = sorted(range(len(documents)), key=lambda i: -steps[i])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result: list[LoraWeights | None] = [None] * len(documents)
    for start in range(0, len(order), config.docs_per_step):
        idx = order[start:start + config.docs_per_step]
        t0 = time.perf_counter()
        adapters, stats = train_group(model, [per_doc[i] for i in idx], config, pad_id,
                                      doc_ids=[documents[i].id for i in idx], on_step=on_step)
        seconds = (time.perf_counter() - t0) / len(idx)
        for i, w, s in zip(idx, adapters, stats, strict=True):
            w.meta = {**s, "seconds": round(seconds, 4), "group_size": len(idx)}
            result[i] = w
        if on_group is not None:
            on_group(len(idx))
    return result  # type: ignore[return-value]


def _augment(documents: list[Document], method: str, model, tokenizer, cache_dir: str | Path | None) -> list:
    """Augmentations aligned with `documents` (training/augment, cached by content hash)."""
    from training.augment import augment_documents

    return list(augment_documents(documents, method=method, model=model, tokenizer=tokenizer,
                                  cache_dir=None if cache_dir is None else str(cache_dir)))


def train_corpus(model_name: str, corpus: str | Path, store: str | Path, config: TeacherConfig | None = None,
                 augment: str = "rules", augment_cache: str | Path | None = None, shard: str = "0/1",
                 on_error: str = "fail", limit: int | None = None, device: str = "cpu",
                 store_dtype: str = "float32", progress: bool = True) -> dict:
    """Train every document of a corpus JSONL into an adapter store; resumable and shardable.

    Documents already in `store` are skipped (rerun after a kill to resume). `shard="i/N"` takes the
    documents whose stable id hash mod N is i, so N processes fill one store exactly once. `on_error`
    "skip" logs and skips a bad corpus record or a document that cannot be trained (e.g. no QA pairs)
    instead of failing. Returns a summary {trained, skipped_existing, failed, skipped_records, seconds,
    docs_per_s}.
    """
    import logging

    from tqdm import tqdm

    from hyperprag.core.data import load_corpus
    from hyperprag.core.models import load_base_model
    from hyperprag.core.store import AdapterStore

    log = logging.getLogger(__name__)
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    config = config or TeacherConfig.for_model(model_name)
    i, n = parse_shard(shard)
    loaded = load_corpus(corpus, on_error=on_error)
    for err in loaded.skipped:
        log.warning("skipped bad record: %s", err)
    docs = [d for d in loaded if shard_of(d.id, n) == i]
    out = AdapterStore.create(store, base_model=model_name, spec=config.spec, dtype=store_dtype,
                              settings={"teacher": config.to_dict(), "augment": augment})
    todo = [d for d in docs if d.id not in out]
    if limit is not None:
        todo = todo[:limit]
    summary = {"shard": shard, "in_shard": len(docs), "skipped_existing": len(docs) - len(todo), "trained": 0,
               "failed": [], "seconds": 0.0,
               "skipped_records": [{"line": e.line, "field": e.field, "error": str(e)} for e in loaded.skipped]}
    if not todo:
        return {**summary, "docs_per_s": 0.0}
    model, tokenizer = load_base_model(model_name, dtype=config.dtype, device=device)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="doc", desc=f"teacher {shard}", disable=not progress)
    steps_bar = tqdm(total=0, unit="step", desc="  group of documents", position=1, leave=False,
                     disable=not progress)

    def on_step(done: int, total: int) -> None:  # optimizer steps of the group in flight, with its ETA
        if done == 1:
            steps_bar.reset(total=total)
        steps_bar.update(1)
    try:
        for g in range(0, len(todo), config.docs_per_step):
            group = todo[g:g + config.docs_per_step]
            augs = _augment(group, augment, model, tokenizer, augment_cache)
            keep = []
            for doc, aug in zip(group, augs, strict=True):
                try:
                    document_examples(tokenizer, [doc], [aug], config)
                    keep.append((doc, aug))
                except ValueError as err:
                    if on_error == "fail":
                        raise
                    log.warning("skipping %s: %s", doc.id, err)
                    summary["failed"].append({"id": doc.id, "error": str(err)})
            if keep:
                adapters = train_documents(model, tokenizer, [d for d, _ in keep], [a for _, a in keep], config,
                                           on_step=on_step)
                for (doc, aug), w in zip(keep, adapters, strict=True):
                    meta = {**w.meta, "content_hash": doc.content_hash, "qa_pairs": len(aug.qa),
                            "rewrites": len(aug.rewrites)}
                    out.put(doc.id, w, meta)
                out.flush()  # one shard per group: a kill loses at most the group in flight
                summary["trained"] += len(keep)
            bar.update(len(group))
            done, elapsed = g + len(group), time.perf_counter() - start
            log.info("teacher %s: %d of %d documents in %.0f s (ETA %.0f s)", shard, done, len(todo), elapsed,
                     elapsed / done * (len(todo) - done))
    finally:
        steps_bar.close()
        bar.close()
        out.flush()
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["docs_per_s"] = summary["trained"] / max(summary["seconds"], 1e-9)
    return summary
