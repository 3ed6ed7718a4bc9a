"""Lightning training of the hypernetwork (student) against per-document teacher LoRAs.

The frozen base model is held outside the module's registered children: it is never in `state_dict`
(checkpoints hold only the hypernetwork, a few MB), never wrapped by DDP/FSDP and never optimized.
Every batch generates one adapter per document; each QA sequence runs with its own document's adapter.

Validation (held-out documents) logs, besides the training losses: the answer loss with the document's
own generated adapter, with another document's (the batch rolled by one) and their gap (>0 means the
adapters carry document-specific knowledge), with no adapter and with the teacher; the mean cosine
between different documents' generated updates (and the teachers'); closed-book exact match on a few
batches.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from hypernet.checkpoint import save_hypernet
from hypernet.config import KL_POSITIONS, PARAM_LOSSES, EncoderSpec, HyperNetConfig, LossWeights
from hypernet.encoders import encoder_dim
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
from hyperprag.core.lora import LoraSpec, LoraWeights, apply_lora, target_shapes

log = logging.getLogger(__name__)
NO_DECAY = ("a_mean", "b_mean", "layer_emb", "module_emb")


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
                 encoder: EncoderSpec | None = None, shapes: dict[str, tuple[int, int, int]] | None = None,
                 em_batches: int = 1, em_max_new_tokens: int = 16, export_dir: str | None = None,
                 on_nonfinite: str = "stop"):
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
            spec: LoRA layout of the teacher adapters (and of the generated ones).
            encoder: document encoder (the CLI links it from the data module).
            shapes: {module: (layers, in, out)}; None = read from the base model's config.
            em_batches: validation batches per epoch on which closed-book exact match is generated.
            em_max_new_tokens: greedy tokens generated per exact-match question.
            export_dir: where the best hypernetwork is exported after fit (default: <root>/hypernet).
            on_nonfinite: a NaN/inf training loss: stop (raise, naming the step and the batch's documents; the
                last checkpoint stays as it was) | skip (no update for that batch, logged; single process
                only, since DDP ranks must step together).
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
        self.save_hyperparameters(ignore=["hypernet", "loss_weights", "spec", "encoder", "shapes"])
        self.spec = _coerce(LoraSpec, spec)
        self.encoder_spec = _coerce(EncoderSpec, encoder)
        self.loss_weights = _coerce(LossWeights, loss_weights)
        config = HyperNetConfig(**_coerce(HyperNetConfig, hypernet).to_dict())
        base_config = None
        if shapes is None or (config.emb_dim is None and self.encoder_spec.kind == "llm"):
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
                             "shapes": {m: list(v) for m, v in self.shapes.items()}})
        self.hypernet = build_hypernet(config, self.shapes, self.spec)
        self.__dict__["_base"] = None  # (model, tokenizer); a plain attribute, so not a registered child

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
            if store_spec is not None and store_spec != self.spec:
                raise ValueError(f"teacher store spec {store_spec} differs from the module's spec {self.spec}")

    def on_fit_start(self) -> None:
        """Calibrate the hypernetwork's output scales on the first training teachers (same on every rank)."""
        net = self.hypernet
        if not (self.config.calibrate and hasattr(net, "calibrate") and not bool(net.calibrated)):
            return
        ds = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        if ds is None or len(ds) == 0:
            return
        teachers = LoraWeights.stack([ds[i][1].to(torch.float32) for i in range(min(len(ds), 32))])
        scales = net.calibrate(teachers.to(self.device))
        log.info("hypernetwork output scales (A rms, B rms) from %d teachers: %s", min(len(ds), 32), scales)

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

    def forward(self, emb: Tensor) -> LoraWeights:
        return self.hypernet(emb)

    def _function_losses(self, batch: dict, student: LoraWeights, teacher: LoraWeights, full: bool) -> dict:
        """KL and answer loss on the batch's QA sequences (plus, if `full`, the validation-only variants)."""
        w = self.loss_weights
        out: dict[str, Tensor] = {}
        ids, am, labels, doc_index = batch["input_ids"], batch["attention_mask"], batch["labels"], batch["doc_index"]
        ans = target_mask(labels, am, "answer")  # [N, t-1]
        need_kl = full or w.kl > 0
        kl_sel = target_mask(labels, am, self.hparams.kl_positions) if need_kl else torch.zeros_like(ans)
        sel = ans | kl_sel
        targets = labels[:, 1:][ans]  # [n_ans]
        in_ans, in_kl = ans[sel], kl_sel[sel]  # which selected positions are answer / KL positions
        base, spec = self.base, self.spec
        s_logits = select_logits(base, spec, student.select(doc_index), ids, am, sel)  # [n_sel, V]
        out["lm"] = lm_loss(s_logits[in_ans], targets)
        if need_kl:
            with torch.no_grad():
                t_logits = select_logits(base, spec, teacher.select(doc_index), ids, am, sel)
            out["kl"] = kl_loss(t_logits[in_kl], s_logits[in_kl], self.hparams.kl_temperature)
        if full:
            with torch.no_grad():
                out["lm_teacher"] = lm_loss(t_logits[in_ans], targets)
                out["lm_none"] = lm_loss(select_logits(base, spec, None, ids, am, ans), targets)
                b = batch["emb"].shape[0]
                if b > 1:  # every sequence with the next document's adapter
                    other = student.select(torch.roll(torch.arange(b, device=ids.device), -1)).select(doc_index)
                    out["lm_other"] = lm_loss(select_logits(base, spec, other, ids, am, ans), targets)
                    out["lm_gap"] = out["lm_other"] - out["lm"]
        return out

    def compute_losses(self, batch: dict, full: bool = False) -> tuple[Tensor, dict[str, Tensor], LoraWeights]:
        """(weighted total, every component, the generated adapters)."""
        w = self.loss_weights
        teacher = LoraWeights(batch["teacher_A"], batch["teacher_B"])
        student = self.hypernet(batch["emb"])  # [b, ...]
        parts = {"param_coord": coord_loss(student, teacher), "param_deltaw": deltaw_loss(student, teacher)}
        parts["param"] = parts[f"param_{self.hparams.param_loss}"]
        zero = parts["param"] * 0.0
        if "input_ids" in batch and (full or w.kl > 0 or w.lm > 0):
            parts.update(self._function_losses(batch, student, teacher, full))
        total = w.param * parts["param"] + w.kl * parts.get("kl", zero) + w.lm * parts.get("lm", zero)
        parts["loss"] = total
        return total, parts, student

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        total, parts, _ = self.compute_losses(batch)
        b = batch["emb"].shape[0]
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
        b = batch["emb"].shape[0]
        self.log_dict({f"val/{k}": v.detach() for k, v in parts.items()}, batch_size=b, sync_dist=True,
                      prog_bar=False)
        self.log("val_loss", total.detach(), batch_size=b, prog_bar=True, sync_dist=True, logger=False)
        if b > 1:
            teacher = LoraWeights(batch["teacher_A"], batch["teacher_B"])
            self.log("val/dw_cos_generated", mean_offdiag(deltaw_cosine(student.detach())), batch_size=b,
                     sync_dist=True)
            self.log("val/dw_cos_teacher", mean_offdiag(deltaw_cosine(teacher)), batch_size=b, sync_dist=True)
        if batch_idx < self.hparams.em_batches and batch.get("qa"):
            for name, weights in (("hyper", student.detach()), ("teacher", LoraWeights(batch["teacher_A"],
                                                                                        batch["teacher_B"])),
                                  ("none", None)):
                em = self.closed_book_em(batch["qa"], weights)
                self.log(f"val/em_{name}", em, batch_size=len(batch["qa"]), sync_dist=True)

    @torch.no_grad()
    def closed_book_em(self, qa: list[tuple[int, str, list[str]]], weights: LoraWeights | None) -> float:
        """Exact match of greedy answers to (doc position, question, answers), each with its document's adapter."""
        from hyperprag.core.metrics import exact_match, extract_answer
        from hyperprag.core.prompts import answer_prompt

        tok, model = self.tokenizer, self.base
        prompts = [answer_prompt(tok, q) for _, q, _ in qa]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        if weights is not None:
            weights = weights.select(torch.tensor([i for i, _, _ in qa], device=self.device))
        with apply_lora(model, self.spec, weights):
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
            folder = Path(self.hparams.export_dir or Path(trainer.default_root_dir) / "hypernet")
            cb = trainer.checkpoint_callback
            best = getattr(cb, "best_model_path", "") or ""
            state, meta = None, {"epoch": trainer.current_epoch, "global_step": trainer.global_step}
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
