"""Lightning training of the hypernetwork (student) against per-document teacher LoRAs.

The frozen base model is held outside the module's registered children: it is never in `state_dict`
(checkpoints hold only the hypernetwork, a few MB), never wrapped by DDP/FSDP and never optimized.
Every batch generates one adapter per document; each QA sequence runs with its own document's adapter.

The network reads a pooled document embedding (`batch["emb"]`) or, for token-level networks, the
document's tokens, which become the frozen base model's per-layer token states here (no gradients).
Losses: the parameter loss against each document's teacher LoRA, KL from the teacher-adapted model, the
answer cross-entropy of the document's closed-book QA, and KL from the base model with the document in
its prompt (in-context distillation); documents without a teacher train on the last two only. An anchor
term (KL from the plain model on general questions through each generated adapter, as the teacher's KL
anchors) keeps answers that have nothing to do with the document.

Validation (held-out documents) logs, besides the training losses: the answer loss with the document's
own generated adapter, with another document's (the batch rolled by one) and their gap (>0 means the
adapters carry document-specific knowledge), with no adapter and with the teacher; the mean cosine
between different documents' generated updates (for token-level networks: of the generated residual,
without the document-independent bias adapter) and the teachers'; closed-book exact match on a few
batches.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from hypernet.checkpoint import CONFIG_FILE, save_hypernet
from hypernet.config import KL_POSITIONS, PARAM_LOSSES, TOKEN_ARCHS, EncoderSpec, HyperNetConfig, LossWeights
from hypernet.encoders import DocStates, TokenStateEncoder, build_encoder, encoder_dim
from hypernet.losses import (
    coord_loss,
    deltaw_cosine,
    deltaw_loss,
    kl_loss,
    lm_loss,
    mean_offdiag,
    select_logits,
    target_mask,
)
from hypernet.model import Shapes, build_hypernet
from hypernet.token_model import generated_part
from hyperprag.core.io import check_replaceable
from hyperprag.core.lora import LoraSpec, LoraWeights, apply_lora, target_shapes

log = logging.getLogger(__name__)
NO_DECAY = ("a_mean", "b_mean", "layer_emb", "module_emb", "gain", "queries", "bias.")


def _coerce(cls, value):
    """A config dataclass from itself, a dict (checkpoint hyperparameters) or None (defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls.from_dict(value) if hasattr(cls, "from_dict") else cls(**value)
    raise TypeError(f"expected {cls.__name__} or a dict, got {type(value).__name__}")


class HyperLoRAModule(pl.LightningModule):
    """The hypernetwork, its losses, optimizer and validation metrics."""

    def __init__(self, hypernet: HyperNetConfig | None = None, loss_weights: LossWeights | None = None,
                 param_loss: str = "deltaw", kl_positions: str = "answer", kl_temperature: float = 1.0,
                 lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 100, schedule: str = "cosine",
                 base_model: str = "smollm2-135m", base_dtype: str = "float32", spec: LoraSpec | None = None,
                 teacher_spec: LoraSpec | None = None, encoder: EncoderSpec | None = None,
                 shapes: dict[str, tuple[int, int, int]] | None = None, em_batches: int = 1,
                 em_max_new_tokens: int = 16, export_dir: str | None = None, on_nonfinite: str = "stop",
                 init_from: str | None = None, anchors: int = 0):
        """
        Args:
            hypernet: architecture and size of the hypernetwork.
            loss_weights: weights of the parameter, KL and answer (LM) losses.
            param_loss: parameter loss against the teacher: coord (normalized per-coordinate MSE) | deltaw.
            kl_positions: where KL is taken: answer (answer tokens) | all (every non-padding token).
            kl_temperature: distillation temperature of the KL loss.
            lr: peak AdamW learning rate.
            weight_decay: AdamW weight decay (not on the mean adapter, embeddings, norms and biases).
            warmup_steps: linear learning-rate warmup steps.
            schedule: after warmup: cosine (to 0 at the last step) | constant.
            base_model: base model name or path (the teacher store's base model).
            base_dtype: dtype the frozen base model runs in (float32 | bfloat16).
            spec: LoRA layout of the generated adapters (rank may exceed the teachers').
            teacher_spec: LoRA layout of the teacher adapters; None = the data's teacher store's, else `spec`.
            encoder: document encoder (the CLI links it from the data module).
            shapes: {module: (layers, in, out)}; None = read from the base model's config.
            em_batches: validation batches per epoch on which closed-book exact match is generated.
            em_max_new_tokens: greedy tokens generated per exact-match question.
            export_dir: where the best hypernetwork is exported after fit (default: <root>/hypernet).
            on_nonfinite: a NaN/inf training loss: stop (raise, naming the step and the batch's documents; the
                last checkpoint stays as it was) | skip (no update for that batch, logged; single process
                only, since DDP ranks must step together).
            init_from: a trained hypernetwork folder whose weights start this fit (a second stage on other
                data); it must have this module's architecture, LoRA spec and shapes.
            anchors: general questions per document and step (answered by the base model itself, from the
                teacher's anchor pool) on which the `anchor` loss keeps the adapted model's distributions.
        """
        super().__init__()
        if param_loss not in PARAM_LOSSES:
            raise ValueError(f"param_loss {param_loss!r} is not one of {PARAM_LOSSES}")
        if kl_positions not in KL_POSITIONS:
            raise ValueError(f"kl_positions {kl_positions!r} is not one of {KL_POSITIONS}")
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule {schedule!r} is not 'cosine' or 'constant'")
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite {on_nonfinite!r} is not 'stop' or 'skip'")
        if anchors < 0:
            raise ValueError(f"anchors must be >= 0, got {anchors}")
        self.save_hyperparameters(ignore=["hypernet", "loss_weights", "spec", "teacher_spec", "encoder", "shapes"])
        self.spec = _coerce(LoraSpec, spec)
        self.teacher_spec = _coerce(LoraSpec, teacher_spec) if teacher_spec is not None else None
        self.encoder_spec = _coerce(EncoderSpec, encoder)
        self.loss_weights = _coerce(LossWeights, loss_weights)
        config = HyperNetConfig(**_coerce(HyperNetConfig, hypernet).to_dict())
        base_config = None
        if (config.arch in TOKEN_ARCHS) != (self.encoder_spec.kind == "tokens"):
            raise ValueError(f"hypernet.arch {config.arch!r} and encoder kind {self.encoder_spec.kind!r} do not fit: "
                             f"the token-level networks {TOKEN_ARCHS} read the 'tokens' encoder, the others one "
                             "pooled vector")
        states = "memory" if config.arch == "memory" else "residual"
        if config.arch in TOKEN_ARCHS and self.encoder_spec.token_states != states:
            raise ValueError(f"hypernet.arch {config.arch!r} reads token_states {states!r}, the encoder gives "
                             f"{self.encoder_spec.token_states!r}")
        if shapes is None or (config.emb_dim is None and self.encoder_spec.kind != "sentence"):
            from transformers import AutoConfig

            from hyperprag.core.models import resolve_model_path

            base_config = AutoConfig.from_pretrained(resolve_model_path(base_model))
        self.shapes: Shapes = ({m: tuple(int(x) for x in s) for m, s in shapes.items()} if shapes is not None
                               else target_shapes(base_config, self.spec))
        if config.emb_dim is None:
            config.emb_dim = encoder_dim(self.encoder_spec, base_config)
        self.config = config
        # Resolved and as plain JSON types: checkpoints load with torch.load(weights_only=True), and
        # load_from_checkpoint needs neither the base model's config nor the data.
        self.hparams.update({"hypernet": config.to_dict(), "loss_weights": self.loss_weights.to_dict(),
                             "spec": self.spec.to_dict(), "encoder": self.encoder_spec.to_dict(),
                             "teacher_spec": None if self.teacher_spec is None else self.teacher_spec.to_dict(),
                             "shapes": {m: list(v) for m, v in self.shapes.items()}})
        self.hypernet = build_hypernet(config, self.shapes, self.spec)
        if init_from is not None:
            self._load_weights(init_from)
        self.__dict__["_base"] = None  # (model, tokenizer); a plain attribute, so not a registered child

    def _load_weights(self, folder: str) -> None:
        from hypernet.checkpoint import HypernetMismatchError, load_hypernet

        start = load_hypernet(folder, expect_spec=self.spec, expect_shapes=self.shapes)
        for key in ("arch", "latent_dim", "heads", "blocks", "bias_rank", "hidden", "basis", "trunk_layers"):
            if getattr(start.config, key) != getattr(self.config, key):
                raise HypernetMismatchError(Path(folder), f"hypernet.{key}", getattr(self.config, key),
                                            getattr(start.config, key))
        self.hypernet.load_state_dict(start.model.state_dict())
        log.info("hypernetwork weights start from %s", folder)

    # ---- the frozen base model ------------------------------------------------------------------------------

    def attach_base(self, model, tokenizer) -> None:
        """Use an already loaded base model (tests, notebooks); otherwise `setup` loads `base_model`."""
        model.requires_grad_(False)
        model.eval()
        self.__dict__["_base"] = (model, tokenizer)

    def setup(self, stage: str) -> None:
        if self.__dict__["_base"] is None:
            from hyperprag.core.models import load_base_model

            self.attach_base(*load_base_model(self.hparams.base_model, dtype=self.hparams.base_dtype))
        model = self.__dict__["_base"][0]
        found = target_shapes(model, self.spec)
        if found != self.shapes:
            raise ValueError(f"base model {self.hparams.base_model!r} has LoRA target shapes {found}, the "
                             f"hypernetwork was built for {self.shapes}")
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None:
            dim = getattr(dm, "embedding_dim", None)
            if dim is not None and dim != self.config.emb_dim:
                raise ValueError(f"data embeddings are {dim}-d, the hypernetwork expects {self.config.emb_dim}-d")
            store_base = getattr(dm, "store_base_model", None)
            if store_base is not None and store_base != self.hparams.base_model:
                raise ValueError(f"the teacher store was trained on base model {store_base!r}, this module "
                                 f"uses {self.hparams.base_model!r}")
            store_spec = getattr(dm, "store_spec", None)
            if store_spec is not None and self.teacher_spec is None:
                self.teacher_spec = store_spec
        teacher = self.teacher_spec or self.spec
        if self.loss_weights.param > 0 and tuple(teacher.target_modules) != tuple(self.spec.target_modules):
            raise ValueError(f"the parameter loss compares matrices of the same modules, but the teachers adapt "
                             f"{list(teacher.target_modules)} and the generated adapters {list(self.spec.target_modules)}"
                             "; set loss_weights.param to 0 (the function losses need no common modules)")

    def export_folder(self) -> Path:
        """Where `on_fit_end` writes the hypernetwork: export_dir, else <default_root_dir>/hypernet."""
        return Path(self.hparams.export_dir or Path(self.trainer.default_root_dir) / "hypernet")

    def on_fit_start(self) -> None:
        """Refuse an export folder that is not a hypernetwork's now, not after the fit (the default
        <root>/hypernet of a run started in this repository's root is the package); then calibrate the
        hypernetwork's output scales on the first training teachers (same on every rank)."""
        check_replaceable(self.export_folder(), CONFIG_FILE)
        net = self.hypernet
        if not (self.config.calibrate and hasattr(net, "calibrate") and not bool(net.calibrated)):
            return
        ds = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        if ds is None or len(ds) == 0:
            return
        found = [t for t in (ds[i][1] for i in range(min(len(ds), 64))) if t is not None][:32]
        if not found:
            return
        teachers = LoraWeights.stack([t.to(torch.float32) for t in found])
        scales = net.calibrate(teachers.to(self.device))
        log.info("hypernetwork output scales (A rms, B rms) from %d teachers: %s", len(found), scales)

    @property
    def base(self):
        """The frozen base model, moved to this module's device on first use there."""
        pair = self.__dict__["_base"]
        if pair is None:
            raise RuntimeError("no base model: call attach_base() or run inside a Trainer (setup loads it)")
        model = pair[0]
        if next(model.parameters()).device != self.device:
            model.to(self.device)
        return model

    @property
    def tokenizer(self):
        return self.__dict__["_base"][1]

    # ---- losses ----------------------------------------------------------------------------------------------

    @property
    def token_encoder(self) -> TokenStateEncoder:
        """The base model as the token-level networks' encoder (built on first use)."""
        enc = self.__dict__.get("_token_encoder")
        if enc is None or enc.model is not self.base:
            enc = build_encoder(self.encoder_spec, self.base, self.tokenizer, layers=self.spec.layers)
            self.__dict__["_token_encoder"] = enc
        return enc

    def hypernet_input(self, batch: dict) -> Tensor | DocStates:
        """What the network reads: the pooled embedding [b, d], or the document's per-layer token states."""
        if self.encoder_spec.kind == "tokens":
            return self.token_encoder.states(batch["doc_input_ids"], batch["doc_attention_mask"])
        return batch["emb"]

    def forward(self, inputs: Tensor | DocStates) -> LoraWeights:
        return self.hypernet(inputs)

    @staticmethod
    def batch_size_of(batch: dict) -> int:
        return len(batch["doc_ids"]) if "doc_ids" in batch else batch["emb"].shape[0]

    def _teacher(self, batch: dict) -> tuple[LoraWeights, Tensor] | None:
        """The batch's teacher adapters [b, ...] and which documents have one [b], if any does."""
        if "teacher_A" not in batch:
            return None
        has = batch.get("has_teacher")
        if has is None:
            has = torch.ones(self.batch_size_of(batch), dtype=torch.bool, device=self.device)
        return LoraWeights(batch["teacher_A"], batch["teacher_B"]), has.bool()

    def _param_losses(self, student: LoraWeights, teacher: LoraWeights) -> dict[str, Tensor]:
        """Parameter losses on the documents with a teacher; the generated update is compared at the
        teacher's LoRA scale (their ranks and alphas may differ)."""
        t_spec = self.teacher_spec or self.spec
        if self.spec.scale != t_spec.scale:
            factor = self.spec.scale / t_spec.scale
            student = LoraWeights(student.A, {m: b * factor for m, b in student.B.items()})
        out = {"param_deltaw": deltaw_loss(student, teacher)}
        if student.rank == teacher.rank:  # coordinates are comparable only between equal shapes
            out["param_coord"] = coord_loss(student, teacher)
        key = f"param_{self.hparams.param_loss}"
        if key not in out:
            raise ValueError(f"param_loss {self.hparams.param_loss!r} needs generated and teacher adapters of one "
                             f"rank ({student.rank} vs {teacher.rank}); use param_loss: deltaw")
        out["param"] = out[key]
        return out

    def _function_losses(self, batch: dict, student: LoraWeights, teacher: tuple[LoraWeights, Tensor] | None,
                         full: bool) -> dict:
        """KL and answer loss on the batch's QA sequences (plus, if `full`, the validation-only variants)."""
        w = self.loss_weights
        out: dict[str, Tensor] = {}
        ids, am, labels, doc_index = batch["input_ids"], batch["attention_mask"], batch["labels"], batch["doc_index"]
        ans = target_mask(labels, am, "answer")  # [N, t-1]
        targets = labels[:, 1:][ans]  # [n_ans]
        base, spec = self.base, self.spec
        # teacher KL only on the sequences of documents that have a teacher
        t_rows = teacher[1][doc_index] if teacher is not None else torch.zeros_like(doc_index, dtype=torch.bool)
        need_kl = bool(t_rows.any()) and (full or w.kl > 0)
        kl_sel = (target_mask(labels, am, self.hparams.kl_positions) & t_rows[:, None] if need_kl
                  else torch.zeros_like(ans))
        sel = ans | kl_sel
        in_ans, in_kl = ans[sel], kl_sel[sel]  # which selected positions are answer / KL positions
        s_logits = select_logits(base, spec, student, ids, am, sel, groups=doc_index)  # [n_sel, V]
        out["lm"] = lm_loss(s_logits[in_ans], targets)
        if need_kl:
            t_spec, t_ans = self.teacher_spec or spec, ans & t_rows[:, None]
            t_sel = kl_sel | t_ans
            with torch.no_grad():
                t_logits = select_logits(base, t_spec, teacher[0], ids, am, t_sel, groups=doc_index)  # [n_t, V]
            out["kl"] = kl_loss(t_logits[kl_sel[t_sel]], s_logits[in_kl], self.hparams.kl_temperature)
            if full:
                out["lm_teacher"] = lm_loss(t_logits[t_ans[t_sel]], labels[:, 1:][t_ans])
        if "ctx_input_ids" in batch and (full or w.ctx > 0):
            out["ctx"] = self._context_kl(batch, s_logits[in_ans])
        if full:
            with torch.no_grad():
                out["lm_none"] = lm_loss(select_logits(base, spec, None, ids, am, ans), targets)
                b = self.batch_size_of(batch)
                if b > 1:  # every sequence with the next document's adapter
                    other = student.select(torch.roll(torch.arange(b, device=ids.device), -1))
                    out["lm_other"] = lm_loss(select_logits(base, spec, other, ids, am, ans, groups=doc_index),
                                              targets)
                    out["lm_gap"] = out["lm_other"] - out["lm"]
        return out

    def _context_kl(self, batch: dict, student_answer_logits: Tensor) -> Tensor:
        """KL(base model with the document in its prompt || student closed-book) at the answer tokens.

        `ctx_*` holds the same QA sequences with the passage in the prompt; their answer tokens are the
        closed-book ones, in the same order, so the two logit rows align one to one.
        """
        c_ids, c_am, c_labels = batch["ctx_input_ids"], batch["ctx_attention_mask"], batch["ctx_labels"]
        c_ans = target_mask(c_labels, c_am, "answer")
        with torch.no_grad():
            c_logits = select_logits(self.base, self.spec, None, c_ids, c_am, c_ans)  # [n_ans, V]
        if c_logits.shape[0] != student_answer_logits.shape[0]:
            raise ValueError(f"in-context batch has {c_logits.shape[0]} answer tokens, closed-book "
                             f"{student_answer_logits.shape[0]}: the two must be the same QA sequences")
        return kl_loss(c_logits, student_answer_logits, self.hparams.kl_temperature)

    def _anchor_kl(self, student: LoraWeights, fixed: bool = False) -> Tensor:
        """Mean KL(base || base + document d's generated adapter) over every token of `anchors` general
        questions per document; training walks through the pool step by step, validation (`fixed`) always
        takes its first ones. The base model's distributions are computed once per anchor (AnchorLogprobs)."""
        from training.sequences import anchor_examples, collate
        from training.teacher import AnchorLogprobs, anchor_pool, token_losses

        cached = self.__dict__.get("_anchors")
        if cached is None or cached[0] is not self.base:
            pool = anchor_examples(self.tokenizer, anchor_pool(self.base, self.tokenizer), max_length=256)
            if not pool:
                raise ValueError("the base model answered none of the anchor questions; set anchors: 0")
            cached = (self.base, pool, AnchorLogprobs(self.base))
            self.__dict__["_anchors"] = cached
        _, pool, targets = cached
        b, n = next(iter(student.A.values())).shape[0], self.hparams.anchors
        start = 0 if fixed else self.global_step * b * n
        picks = [pool[(start + i) % len(pool)] for i in range(b * n)]
        batch = {k: v.to(self.device) for k, v in collate(picks, self.tokenizer.pad_token_id).items()}
        rows = torch.ones(b * n, dtype=torch.bool, device=self.device)
        groups = torch.arange(b, device=self.device).repeat_interleave(n)  # [b*n]: each row's document
        kl, _ = token_losses(self.base, batch, rows, targets(batch, rows), adapter=(self.spec, student),
                             groups=groups)
        return kl.mean()

    def compute_losses(self, batch: dict, full: bool = False) -> tuple[Tensor, dict[str, Tensor], LoraWeights]:
        """(weighted total, every component, the generated adapters)."""
        w = self.loss_weights
        teacher = self._teacher(batch)
        student = self.hypernet(self.hypernet_input(batch))  # [b, ...]
        parts: dict[str, Tensor] = {}
        if teacher is not None and bool(teacher[1].any()) and (full or w.param > 0):
            has = teacher[1]
            parts.update(self._param_losses(student.select(has), teacher[0].select(has)))
        if "input_ids" in batch and (full or w.kl > 0 or w.lm > 0 or w.ctx > 0):
            parts.update(self._function_losses(batch, student, teacher, full))
        if self.hparams.get("anchors", 0) and (full or w.anchor > 0):
            parts["anchor"] = self._anchor_kl(student, fixed=full)
        zero = next(iter(student.A.values())).sum() * 0.0
        total = (w.param * parts.get("param", zero) + w.kl * parts.get("kl", zero) + w.lm * parts.get("lm", zero)
                 + w.ctx * parts.get("ctx", zero) + w.anchor * parts.get("anchor", zero))
        parts["loss"] = total
        return total, parts, student

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        total, parts, _ = self.compute_losses(batch)
        b = self.batch_size_of(batch)
        if not bool(torch.isfinite(total)):
            what = (f"hypernetwork training step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx}): "
                    f"non-finite loss {float(total)} ({ {k: float(v) for k, v in parts.items()} }) for documents "
                    f"{list(batch.get('doc_ids', []))}")
            if self.hparams.get("on_nonfinite", "stop") == "stop":
                from training.teacher import NonFiniteLossError

                raise NonFiniteLossError(what + "; the last checkpoint is unchanged (on_nonfinite: skip drops "
                                                "such batches instead)")
            log.warning("%s; batch skipped", what)
            return None  # Lightning then runs no backward: without gradients AdamW changes nothing
        self.log_dict({f"train/{k}": v.detach() for k, v in parts.items()}, batch_size=b, prog_bar=False)
        self.log("train_loss", total.detach(), batch_size=b, prog_bar=True, logger=False)
        return total

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        total, parts, student = self.compute_losses(batch, full=True)
        b = self.batch_size_of(batch)
        self.log_dict({f"val/{k}": v.detach() for k, v in parts.items()}, batch_size=b, sync_dist=True,
                      prog_bar=False)
        self.log("val_loss", total.detach(), batch_size=b, prog_bar=True, sync_dist=True, logger=False)
        teacher = self._teacher(batch)
        if b > 1:
            bias_rank = student.meta.get("bias_rank", 0)
            residual = generated_part(student.detach(), bias_rank) if bias_rank else student.detach()
            self.log("val/dw_cos_generated", mean_offdiag(deltaw_cosine(residual)), batch_size=b, sync_dist=True)
            if teacher is not None and int(teacher[1].sum()) > 1:
                self.log("val/dw_cos_teacher", mean_offdiag(deltaw_cosine(teacher[0].select(teacher[1]))),
                         batch_size=b, sync_dist=True)
        if batch_idx < self.hparams.em_batches and batch.get("qa"):
            sources = [("hyper", student.detach(), self.spec), ("none", None, self.spec)]
            if teacher is not None and bool(teacher[1].all()):
                sources.append(("teacher", teacher[0], self.teacher_spec or self.spec))
            for name, weights, spec in sources:
                em = self.closed_book_em(batch["qa"], weights, spec)
                self.log(f"val/em_{name}", em, batch_size=len(batch["qa"]), sync_dist=True)

    @torch.no_grad()
    def closed_book_em(self, qa: list[tuple[int, str, list[str]]], weights: LoraWeights | None,
                       spec: LoraSpec | None = None) -> float:
        """Exact match of greedy answers to (doc position, question, answers), each with its document's adapter."""
        from hyperprag.core.metrics import exact_match, extract_answer
        from hyperprag.core.prompts import answer_prompt

        tok, model = self.tokenizer, self.base
        prompts = [answer_prompt(tok, q) for _, q, _ in qa]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        if weights is not None:
            weights = weights.select(torch.tensor([i for i, _, _ in qa], device=self.device))
        with apply_lora(model, spec or self.spec, weights):
            out = model.generate(**enc, max_new_tokens=self.hparams.em_max_new_tokens, do_sample=False,
                                 num_beams=1, pad_token_id=tok.pad_token_id, temperature=None, top_p=None,
                                 top_k=None)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        scores = [exact_match(extract_answer(t), answers) for t, (_, _, answers) in zip(texts, qa, strict=True)]
        return float(sum(scores) / len(scores))

    # ---- optimization -----------------------------------------------------------------------------------------

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.hypernet.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.dim() < 2 or any(k in name for k in NO_DECAY) else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hparams.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.hparams.lr)
        warmup = self.hparams.warmup_steps
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        cosine = self.hparams.schedule == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- export -------------------------------------------------------------------------------------------------

    def export(self, folder: str | Path, state_dict: dict | None = None, meta: dict | None = None) -> Path:
        """Write the hypernetwork (or `state_dict` of one) as a checkpoint folder (hypernet/checkpoint.py)."""
        net = self.hypernet
        if state_dict is not None:
            net = build_hypernet(self.config, self.shapes, self.spec)
            net.load_state_dict(state_dict)
        return save_hypernet(folder, net, self.config, self.spec, self.hparams.base_model, self.encoder_spec,
                             self.shapes, meta)

    def on_fit_end(self) -> None:
        """Export the best checkpoint's hypernetwork (the last weights if none) into the run folder."""
        trainer = self.trainer
        if trainer.is_global_zero:
            folder = self.export_folder()
            cb = trainer.checkpoint_callback
            best = getattr(cb, "best_model_path", "") or ""
            state = None
            meta = {"epoch": trainer.current_epoch, "global_step": trainer.global_step,
                    "trained_steps": trainer.global_step}  # global_step becomes the exported checkpoint's below
            if best and Path(best).is_file():
                ckpt = torch.load(best, map_location="cpu", weights_only=True)
                state = {k.removeprefix("hypernet."): v for k, v in ckpt["state_dict"].items()
                         if k.startswith("hypernet.")}
                score = getattr(cb, "best_model_score", None)
                meta.update({"checkpoint": str(best), "monitor": getattr(cb, "monitor", None),
                             "best_score": None if score is None else float(score),
                             "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step")})
            path = self.export(folder, state, meta)
            log.info("exported hypernetwork to %s", path)
        trainer.strategy.barrier("hypernet-export")
