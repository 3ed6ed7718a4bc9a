"""Training the token-level hypernetwork with Lightning: document tokens in the batch, partial teachers,
teachers of another rank, in-context distillation, and the file-based data module (corpora, question files,
no teacher store)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from hypernet.config import EncoderSpec, HyperNetConfig, LossWeights
from hypernet.losses import kl_loss, select_logits, target_mask
from hyperprag.core.data import Document, Passage, Question, write_jsonl
from hyperprag.core.lora import LoraSpec, LoraWeights, target_shapes
from training.hypernet_data import DocItem, HyperDataModule, document_examples, given_questions
from training.sequences import SequenceOptions

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "hypernet"))
from hyper_synth import FACTS, random_teacher, randomize_b  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TEACHER_SPEC = LoraSpec()  # rank 2, alpha 32: the teachers
GEN_SPEC = LoraSpec(rank=6, alpha=16.0)  # 2 bias + 4 generated slots, another scale


def _items(tok, model, n_docs: int, with_teacher=lambda i: True, context: bool = False) -> list[DocItem]:
    shapes = target_shapes(model, TEACHER_SPEC)
    options = SequenceOptions(kinds=("qa_closed",), max_length=160)
    items = []
    for i in range(n_docs):
        title, question, answer = FACTS[i % len(FACTS)]
        doc = Document(f"doc{i}", title, f"{title}: the answer to '{question}' is {answer}.")
        aug = SimpleNamespace(qa=[SimpleNamespace(question=question, answer=answer, full_answer="")], rewrites=[])
        examples, ctx = document_examples(tok, doc, aug, options, with_context=context)
        teacher = random_teacher(shapes, TEACHER_SPEC, i) if with_teacher(i) else None
        items.append(DocItem(doc.id, None, examples, [(question, [answer])], teacher,
                             doc_tokens=tok(doc.full_text)["input_ids"], context_examples=ctx))
    return items


def _module(model, tok, **kw):
    from training.hypernet_module import HyperLoRAModule

    module = HyperLoRAModule(hypernet=HyperNetConfig(arch="perceiver", emb_dim=64, latent_dim=32, heads=4, blocks=1,
                                                     bias_rank=2, b_scale=0.1),
                             spec=GEN_SPEC, teacher_spec=TEACHER_SPEC, encoder=EncoderSpec(kind="tokens"),
                             shapes=target_shapes(model, GEN_SPEC), base_model="tiny-llama", **kw)
    module.attach_base(model, tok)
    return module


def test_arch_and_encoder_must_fit(tiny_llama):
    from training.hypernet_module import HyperLoRAModule

    with pytest.raises(ValueError, match="do not fit"):
        HyperLoRAModule(hypernet=HyperNetConfig(arch="perceiver", emb_dim=64), encoder=EncoderSpec(kind="sentence"),
                        spec=GEN_SPEC, shapes=target_shapes(tiny_llama, GEN_SPEC))


def test_token_level_training_with_partial_teachers(tiny_llama, tiny_tokenizer, tmp_path):
    """Documents 0, 2 have teachers, 1, 3 not: KL is taken on the teachers' sequences only, every loss is
    finite, training lowers the answer loss, and validation reports the residual's cosine."""
    pl.seed_everything(0)
    items = _items(tiny_tokenizer, tiny_llama, 4, with_teacher=lambda i: i % 2 == 0)
    dm = HyperDataModule.from_items(items, items, tiny_tokenizer.pad_token_id, batch_size=4,
                                    encoder=EncoderSpec(kind="tokens"))
    module = _module(tiny_llama, tiny_tokenizer, lr=1e-2, warmup_steps=1, schedule="constant", em_batches=1,
                     loss_weights=LossWeights(param=0.1, kl=1.0, lm=1.0))
    batch = next(iter(dm.train_dataloader()))
    assert batch["has_teacher"].tolist() == [int(d[3:]) % 2 == 0 for d in batch["doc_ids"]]
    total, parts, student = module.compute_losses(batch, full=True)
    assert student.rank == 6 and torch.isfinite(total)
    # KL by hand over the answer tokens of documents with a teacher
    has = batch["has_teacher"][batch["doc_index"]]
    ans = target_mask(batch["labels"], batch["attention_mask"]) & has[:, None]
    with torch.no_grad():
        s = select_logits(tiny_llama, GEN_SPEC, student.select(batch["doc_index"]), batch["input_ids"],
                          batch["attention_mask"], ans)
        t = select_logits(tiny_llama, TEACHER_SPEC, LoraWeights(batch["teacher_A"], batch["teacher_B"]).select(
            batch["doc_index"]), batch["input_ids"], batch["attention_mask"], ans)
    assert float(parts["kl"]) == pytest.approx(float(kl_loss(t, s)), rel=1e-4, abs=1e-6)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=30, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         num_sanity_val_steps=0, check_val_every_n_epoch=1000)
    trainer.fit(module, datamodule=dm)
    val = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert val["val/lm"] < float(parts["lm"]) - 0.3
    for key in ("val/lm_other", "val/lm_none", "val/lm_teacher", "val/dw_cos_generated", "val/dw_cos_teacher",
                "val/em_hyper", "val/param_deltaw"):
        assert key in val and val[key] == val[key], key


def test_bf16_mixed_precision_trains_like_float32(tiny_llama, tiny_tokenizer, tmp_path):
    """`--trainer.precision bf16-mixed` (autocast, ~1.4x a step on a bf16 CPU: benchmarks/hypernet_step.py)
    runs this module and lowers the held-out answer loss about as far as float32 does."""
    result = {}
    for precision in ("32", "bf16-mixed"):
        pl.seed_everything(0)
        items = _items(tiny_tokenizer, tiny_llama, 4)
        dm = HyperDataModule.from_items(items, items, tiny_tokenizer.pad_token_id, batch_size=4,
                                        encoder=EncoderSpec(kind="tokens"))
        module = _module(tiny_llama, tiny_tokenizer, lr=1e-2, warmup_steps=1, schedule="constant", em_batches=1,
                         loss_weights=LossWeights(param=0.0, kl=0.0, lm=1.0))
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=30, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, precision=precision,
                             default_root_dir=str(tmp_path / precision), num_sanity_val_steps=0,
                             check_val_every_n_epoch=1000)
        start = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/lm"]
        trainer.fit(module, datamodule=dm)
        result[precision] = (start, trainer.validate(module, datamodule=dm, verbose=False)[0]["val/lm"])
    (start32, end32), (start16, end16) = result["32"], result["bf16-mixed"]
    assert start16 == pytest.approx(start32, abs=0.05) and end32 < start32 - 0.5 and end16 < start16 - 0.5
    assert end16 == pytest.approx(end32, abs=0.3)


def test_fit_refuses_an_export_folder_of_other_files_before_training(tiny_llama, tiny_tokenizer, tmp_path):
    """Run from the repository root with no root dir, the default export folder <root>/hypernet is the source
    package: the fit stops at its start with a one-line error, and the files stay."""
    from hyperprag.core.errors import InputError

    items = _items(tiny_tokenizer, tiny_llama, 2)
    dm = HyperDataModule.from_items(items, items, tiny_tokenizer.pad_token_id, batch_size=2,
                                    encoder=EncoderSpec(kind="tokens"))
    module = _module(tiny_llama, tiny_tokenizer, loss_weights=LossWeights(param=0.0, kl=0.0, lm=1.0))
    (tmp_path / "hypernet").mkdir()
    (tmp_path / "hypernet" / "__init__.py").write_text("x = 1\n")
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         num_sanity_val_steps=0)
    with pytest.raises(InputError, match="hypernet: exists and is not an earlier output"):
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 0 and (tmp_path / "hypernet" / "__init__.py").read_text() == "x = 1\n"


def test_param_loss_across_ranks_and_scales(tiny_llama, tiny_tokenizer):
    """A rank-6, alpha-16 adapter holding a rank-2, alpha-32 teacher's update (B rescaled, zero slots) has
    zero delta-W loss against it: the comparison is of updates, at the teacher's scale."""
    module = _module(tiny_llama, tiny_tokenizer)
    teacher = LoraWeights.stack([random_teacher(target_shapes(tiny_llama, TEACHER_SPEC), TEACHER_SPEC, 0)])
    factor = TEACHER_SPEC.scale / GEN_SPEC.scale
    student = LoraWeights({m: torch.cat([a, torch.randn(*a.shape[:-2], 4, a.shape[-1])], dim=-2)
                           for m, a in teacher.A.items()},
                          {m: torch.cat([b * factor, torch.zeros(*b.shape[:-1], 4)], dim=-1) for m, b in teacher.B.items()})
    parts = module._param_losses(student, teacher)
    assert float(parts["param_deltaw"]) < 1e-6 and "param_coord" not in parts
    unscaled = LoraWeights(student.A, {m: b / factor for m, b in student.B.items()})
    expected = (1 - 1 / factor) ** 2  # relative error of an update 1/factor the size
    assert float(module._param_losses(unscaled, teacher)["param_deltaw"]) == pytest.approx(expected, abs=1e-5)


def test_context_kl_pairs_and_value(tiny_llama, tiny_tokenizer):
    """With context_kl the batch carries the same QA sequences with the document in the prompt; their answer
    tokens align with the closed-book ones, and the loss is KL(in-context base || closed-book student)."""
    items = _items(tiny_tokenizer, tiny_llama, 2, context=True)
    for it in items:
        closed, inside = it.examples[0], it.context_examples[0]
        n = closed.num_targets
        assert n == inside.num_targets and closed.input_ids[-n:] == inside.input_ids[-n:]
        assert len(inside.input_ids) > len(closed.input_ids)
    dm = HyperDataModule.from_items(items, items, tiny_tokenizer.pad_token_id, batch_size=2,
                                    encoder=EncoderSpec(kind="tokens"))
    batch = next(iter(dm.train_dataloader()))
    module = _module(tiny_llama, tiny_tokenizer, loss_weights=LossWeights(param=0.0, kl=0.0, lm=1.0, ctx=1.0))
    total, parts, student = module.compute_losses(batch)
    ans = target_mask(batch["labels"], batch["attention_mask"])
    c_ans = target_mask(batch["ctx_labels"], batch["ctx_attention_mask"])
    with torch.no_grad():
        s = select_logits(tiny_llama, GEN_SPEC, student.select(batch["doc_index"]), batch["input_ids"],
                          batch["attention_mask"], ans)
        c = select_logits(tiny_llama, GEN_SPEC, None, batch["ctx_input_ids"], batch["ctx_attention_mask"], c_ans)
    assert float(parts["ctx"]) == pytest.approx(float(kl_loss(c, s)), rel=1e-3, abs=1e-6)
    assert float(total) == pytest.approx(float(parts["lm"] + parts["ctx"]), rel=1e-6)


def _write_corpus(tmp_path: Path) -> tuple[Path, Path, Path]:
    docs_a = [Document("a1", "Lake Vorn", "Lake Vorn lies near the town of Tesmar."),
              Document("a2", "Kell bridge", "The Kell bridge was built by Ilsa Brandt in 1832.")]
    docs_b = [Document("b1", "Comet Ispar", "Comet Ispar was found by Lena Hollis in 1911.")]
    questions = [Question("q1", "Which town is close to Lake Vorn?", ["Tesmar"],
                          passages=[Passage(docs_a[0].title, docs_a[0].text, True)]),
                 Question("q2", "Who discovered the comet?", ["Lena Hollis"],
                          passages=[Passage("Other", "Unrelated.", False),
                                    Passage(docs_b[0].title, docs_b[0].text, True)]),
                 Question("q3", "Not about any document?", ["x"], passages=[Passage("Elsewhere", "No.", True)])]
    write_jsonl(tmp_path / "a.jsonl", docs_a)
    write_jsonl(tmp_path / "b.jsonl", docs_b)
    write_jsonl(tmp_path / "q.jsonl", questions)
    return tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "q.jsonl"


def test_data_module_from_files_without_teachers(tmp_path, monkeypatch, tiny_tokenizer):
    a, b, q = _write_corpus(tmp_path)
    given = given_questions([str(q)], {Document("x", "Lake Vorn", "Lake Vorn lies near the town of Tesmar.")
                                       .content_hash})
    assert list(given.values()) == [[("Which town is close to Lake Vorn?", "Tesmar")]]
    dm = HyperDataModule(corpus=[str(a), str(b)], questions=[str(q)], require_teacher=False,
                         encoder=EncoderSpec(kind="tokens"), val_fraction=0.34, base_model="tiny")
    monkeypatch.setattr(dm, "_tokenizer", lambda: tiny_tokenizer)
    dm.setup()
    items = {it.doc_id: it for it in dm.train_set.items + dm.val_set.items}
    assert set(items) == {"a1", "a2", "b1"} and len(dm.val_set) == 1
    assert items["a1"].qa[0] == ("Which town is close to Lake Vorn?", ["Tesmar"])  # given questions first
    assert items["b1"].qa[0] == ("Who discovered the comet?", ["Lena Hollis"])
    assert len(items["a1"].qa) > 1  # then the rule questions made on the fly
    assert items["a2"].doc_tokens == tiny_tokenizer("Kell bridge: The Kell bridge was built by Ilsa Brandt in "
                                                    "1832.")["input_ids"]
    assert dm.train_set[0][1] is None and dm.embedding_dim is None  # no teachers, no pooled embeddings
    batch = next(iter(dm.train_dataloader()))
    assert "teacher_A" not in batch and batch["doc_input_ids"].shape[0] == len(batch["doc_ids"])


def test_data_module_errors_name_the_problem(tmp_path):
    a, _, _ = _write_corpus(tmp_path)
    with pytest.raises(ValueError, match="require_teacher: false"):
        HyperDataModule(corpus=str(a), encoder=EncoderSpec(kind="tokens"))._sources()
    write_jsonl(tmp_path / "dup.jsonl", [Document("a1", "Again", "Same id.")])
    dm = HyperDataModule(corpus=[str(a), str(tmp_path / "dup.jsonl")], require_teacher=False)
    with pytest.raises(ValueError, match="'a1' is also in"):
        dm._sources()


def test_init_from_a_trained_hypernetwork(tiny_llama, tiny_tokenizer, tmp_path):
    """A second stage starts from the first stage's exported weights; another architecture is refused."""
    from hypernet.checkpoint import HypernetMismatchError
    from hypernet.encoders import TokenStateEncoder

    first = _module(tiny_llama, tiny_tokenizer)
    randomize_b(first.hypernet)
    folder = first.export(tmp_path / "stage1")
    second = _module(tiny_llama, tiny_tokenizer, init_from=str(folder))
    docs = TokenStateEncoder(tiny_llama, tiny_tokenizer).encode(["Lake Vorn lies near Tesmar."])
    a, b = first.hypernet(docs), second.hypernet(docs)
    for m in a.B:
        assert torch.count_nonzero(a.B[m]) > 0
        torch.testing.assert_close(a.B[m], b.B[m])
    from training.hypernet_module import HyperLoRAModule

    with pytest.raises(HypernetMismatchError, match="latent_dim"):
        HyperLoRAModule(hypernet=HyperNetConfig(arch="perceiver", emb_dim=64, latent_dim=16, heads=4, blocks=1),
                        spec=GEN_SPEC, encoder=EncoderSpec(kind="tokens"), shapes=target_shapes(tiny_llama, GEN_SPEC),
                        init_from=str(folder))


def test_anchor_kl_value_and_zero_at_the_plain_model(tiny_llama, tiny_tokenizer):
    """The anchor loss is the mean over every anchor token of KL(base || base + the row's own document's
    generated adapter), computed by hand one document at a time; a network still at its zero-B start (the
    plain model) has none, and the term has gradients once B is not zero."""
    import torch.nn.functional as F

    from hyperprag.core.lm import target_logits
    from hyperprag.core.lora import apply_lora
    from training.sequences import anchor_examples, collate
    from training.teacher import anchor_pool

    items = _items(tiny_tokenizer, tiny_llama, 3)
    dm = HyperDataModule.from_items(items, items, tiny_tokenizer.pad_token_id, batch_size=3,
                                    encoder=EncoderSpec(kind="tokens"))
    batch = next(iter(dm.val_dataloader()))
    module = _module(tiny_llama, tiny_tokenizer, anchors=2,
                     loss_weights=LossWeights(param=0.0, kl=0.0, lm=0.0, anchor=1.0))
    _, parts, student = module.compute_losses(batch)
    assert float(parts["anchor"].detach()) == pytest.approx(0.0, abs=1e-6)  # B starts at zero: the plain model
    randomize_b(module.hypernet, std=0.3)
    total, parts, student = module.compute_losses(batch, full=True)  # validation: the pool's first anchors
    pool = anchor_examples(tiny_tokenizer, anchor_pool(tiny_llama, tiny_tokenizer), max_length=256)
    kls = []
    with torch.no_grad():
        for d in range(3):
            rows = collate(pool[2 * d:2 * d + 2], tiny_tokenizer.pad_token_id)
            base, _, _ = target_logits(tiny_llama, rows["input_ids"], rows["labels"])
            with apply_lora(tiny_llama, GEN_SPEC, student.select(d)):
                adapted, _, _ = target_logits(tiny_llama, rows["input_ids"], rows["labels"])
            kls.append(F.kl_div(adapted.log_softmax(-1), base.log_softmax(-1), log_target=True,
                                reduction="none").sum(-1))
    expected = torch.cat(kls).mean()
    assert float(expected) > 1e-4
    assert float(parts["anchor"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(total) == pytest.approx(float(parts["anchor"]), rel=1e-6)
    total.backward()
    assert module.hypernet.b_gain.grad is not None and float(module.hypernet.b_gain.grad.abs().sum()) > 0
