"""The batched teacher equals sequential PEFT training, document by document (the key property)."""

from __future__ import annotations

import copy
import logging
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import get_scheduler

from hyperprag.core.data import Document
from hyperprag.core.lora import LoraSpec, LoraWeights, init_lora, target_shapes
from training.sequences import Example, collate
from training.teacher import (
    TeacherConfig,
    document_examples,
    document_plan,
    lr_factor,
    parse_shard,
    shard_of,
    token_losses,
    train_documents,
)

QA = SimpleNamespace
TEACHER_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "teacher"


def _docs():
    docs = [Document("d0", "Lake Vorn", "Lake Vorn is in Tesmar. Its water is green."),
            Document("d1", "Ilsa Brandt", "Ilsa Brandt built the Kell bridge in 1871."),
            Document("d2", "Oro", "Oro is a blue fruit from Pell.")]
    augs = [SimpleNamespace(qa=[QA(question="Where is Lake Vorn?", answer="Tesmar", full_answer=None),
                                QA(question="What colour is its water?", answer="green", full_answer=None)],
                            rewrites=["Vorn, a lake of Tesmar, is green."]),
            SimpleNamespace(qa=[QA(question="Who built the Kell bridge?", answer="Ilsa Brandt", full_answer=None),
                                QA(question="When was it built?", answer="1871", full_answer=None),
                                QA(question="What did Brandt build?", answer="the Kell bridge", full_answer=None),
                                QA(question="Which bridge?", answer="Kell", full_answer=None),
                                QA(question="Built by?", answer="Brandt", full_answer=None)],
                            rewrites=[]),
            SimpleNamespace(qa=[QA(question="What colour is oro?", answer="blue", full_answer=None),
                                QA(question="Where is oro from?", answer="Pell", full_answer=None),
                                QA(question="What is oro?", answer="a fruit", full_answer=None),
                                QA(question="Oro grows where?", answer="Pell", full_answer=None)],
                            rewrites=[])]
    return docs, augs


_PEFT_NAME = re.compile(r"layers\.(\d+)\..*?([a-z_]+)\.lora_([AB])\.default\.weight$")


def _sequential_peft(base, tokenizer, examples, config: TeacherConfig, init: LoraWeights) -> LoraWeights:
    """Train one document alone with PEFT + torch AdamW + transformers' scheduler: the reference."""
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=config.rank, lora_alpha=config.alpha,
                                                            target_modules=list(config.target_modules),
                                                            lora_dropout=0.0))
    named = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            m = _PEFT_NAME.search(name)
            if m:
                layer, mtype, ab = int(m.group(1)), m.group(2), m.group(3)
                if ab == "A":
                    p.copy_(init.A[mtype][layer])  # same init as the batched teacher
                named[(mtype, layer, ab)] = p
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == len(named) and named
    opt = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    plan = document_plan(examples, config)
    name = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}[config.schedule]
    sched = get_scheduler(name, opt, num_warmup_steps=math.ceil(config.warmup_ratio * len(plan)),
                          num_training_steps=len(plan))
    for step_ids in plan:
        batch = collate([examples[j] for j in step_ids], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # the usual mean token cross-entropy; computed here because HF's labels= path casts logits to fp32
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    layers = sorted({k[1] for k in named})
    return LoraWeights({m: torch.stack([named[(m, i, "A")].detach() for i in layers]) for m in config.target_modules},
                       {m: torch.stack([named[(m, i, "B")].detach() for i in layers]) for m in config.target_modules})


_REFERENCE: dict[str, list[LoraWeights]] = {}  # sequential PEFT results per model (they do not depend on K)


@pytest.mark.parametrize(("model_fixture", "k", "max_tokens"),  # max_tokens 1: one sequence per forward
                         [("tiny_llama", 1, 4096), ("tiny_llama", 3, 4096), ("tiny_llama", 3, 1),
                          ("tiny_gemma", 3, 4096)])
def test_batched_equals_sequential_peft(model_fixture, k, max_tokens, tiny_tokenizer, request, float64_norms):
    """Exact up to rounding: float64, because Adam turns float32 rounding in near-zero gradients into
    lr-sized steps (seen: one element of 512 off by 5e-5 at lr 1e-2 in float32). The batched teacher sums a
    document's gradients in another order (its shared chat prefix is computed once), so the RMS norms,
    which transformers runs in float32 even in a float64 model, keep float64 as well (conftest.py)."""
    base = copy.deepcopy(request.getfixturevalue(model_fixture)).double()
    docs, augs = _docs()
    config = TeacherConfig(epochs=2, lr=1e-2, schedule="cosine", warmup_ratio=0.2, weight_decay=0.05,
                           batch_size=2, grad_clip=0.5, docs_per_step=k, kinds=("qa_passage", "qa_rewrite",
                                                                                 "qa_closed"), seed=3,
                           max_batch_tokens=max_tokens)
    adapters = train_documents(base, tiny_tokenizer, docs, augs, config)
    per_doc = document_examples(tiny_tokenizer, docs, augs, config)
    assert len({len(document_plan(ex, config)) for ex in per_doc}) == 3  # unequal step counts
    init = init_lora(target_shapes(base, config.spec), config.spec, seed=config.seed, dtype=torch.float64)
    if model_fixture not in _REFERENCE:
        _REFERENCE[model_fixture] = [_sequential_peft(base, tiny_tokenizer, ex, config, init) for ex in per_doc]
    for d, examples in enumerate(per_doc):
        ref = _REFERENCE[model_fixture][d]
        for m in config.target_modules:
            assert ref.B[m].abs().max() > 1e-3  # training moved the adapter
            torch.testing.assert_close(adapters[d].A[m], ref.A[m], atol=1e-9, rtol=0)
            torch.testing.assert_close(adapters[d].B[m], ref.B[m], atol=1e-9, rtol=0)
        assert adapters[d].meta["steps"] == len(document_plan(examples, config))
    # documents learn different things from one init
    assert (adapters[0].B["up_proj"] - adapters[1].B["up_proj"]).abs().max() > 1e-3


def test_every_optimizer_step_reports_progress(tiny_llama, tiny_tokenizer):
    """on_step sees each step of each group once, with the group's step count as total (tqdm's ETA)."""
    docs, augs = _docs()
    calls: list[tuple[int, int]] = []
    config = TeacherConfig(epochs=1, lr=1e-2, docs_per_step=2)
    adapters = train_documents(tiny_llama, tiny_tokenizer, docs[:3], augs[:3], config,
                               on_step=lambda done, total: calls.append((done, total)))
    longest = max(a.meta["steps"] for a in adapters)
    assert calls[0] == (1, longest)  # groups run longest first
    per_group = [c for c in calls if c[0] == c[1]]  # the last step of each group
    assert len(per_group) == 2 and len(calls) == sum(t for _, t in per_group)
    assert all(d == prev + 1 or d == 1 for (prev, _), (d, _) in zip(calls, calls[1:], strict=False))


def test_base_model_stays_frozen(tiny_llama, tiny_tokenizer):
    before = {n: p.clone() for n, p in tiny_llama.state_dict().items()}
    docs, augs = _docs()
    train_documents(tiny_llama, tiny_tokenizer, docs[:2], augs[:2], TeacherConfig(epochs=1, lr=1e-2))
    for n, p in tiny_llama.state_dict().items():
        assert torch.equal(p, before[n]), n
    assert not any(p.requires_grad for p in tiny_llama.parameters())


def test_training_lowers_loss_and_records_stats(tiny_llama, tiny_tokenizer):
    docs, augs = _docs()
    adapters = train_documents(tiny_llama, tiny_tokenizer, docs, augs,
                               TeacherConfig(epochs=10, lr=1e-2, docs_per_step=2))
    for w in adapters:
        # a random tiny model's head bounds its logits (~|W_row| * sqrt(d)), so the loss cannot fall far
        assert w.meta["final_loss"] < w.meta["first_loss"] - 0.3, w.meta
        assert w.meta["seconds"] > 0 and w.meta["sequences"] > 0


@pytest.mark.parametrize("model_fixture", ["tiny_llama", "tiny_gemma"])
def test_token_losses_match_model_forward(model_fixture, tiny_tokenizer, request):
    """Head-on-targets-only loss equals cross-entropy of the model's own logits (incl. Gemma softcap)."""
    model = request.getfixturevalue(model_fixture)
    docs, augs = _docs()
    config = TeacherConfig(answer_only=True)
    examples = document_examples(tiny_tokenizer, docs, augs, config)[1][:3]
    batch = collate(examples, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        losses, rows = token_losses(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift = batch["labels"][:, 1:]
    ref = torch.nn.functional.cross_entropy(logits[:, :-1][shift != -100].float(), shift[shift != -100],
                                            reduction="none")
    torch.testing.assert_close(losses, ref, atol=1e-5, rtol=1e-5)
    assert rows.tolist() == sorted(rows.tolist()) and len(set(rows.tolist())) == 3


def test_documents_without_sequences_error(tiny_llama, tiny_tokenizer):
    docs, augs = _docs()
    with pytest.raises(ValueError, match="'d1'.*no training sequences"):
        train_documents(tiny_llama, tiny_tokenizer, docs[:2], [augs[0], SimpleNamespace(qa=[], rewrites=[])],
                        TeacherConfig())


def test_lr_schedules():
    assert lr_factor("constant", 0, 10, 0) == 1.0
    assert lr_factor("constant", 1, 10, 4) == 0.25
    assert lr_factor("linear", 5, 10, 0) == 0.5
    assert lr_factor("cosine", 5, 10, 0) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10, 0) == pytest.approx(0.0)


def test_anchors_per_epoch_rotates_through_the_documents_anchors():
    """Each epoch keeps every QA sequence and the next n anchors; over the run every anchor is trained."""
    examples = [Example(0, "qa_closed", [1], [1])] * 5 + [Example(0, "anchor", [a], [a]) for a in range(8)]
    config = TeacherConfig(epochs=4, batch_size=3, anchors_per_epoch=2)
    plan = document_plan(examples, config)
    assert len(plan) == 4 * 3  # 7 sequences an epoch in batches of 3
    epochs = [sorted(sum(plan[e * 3:(e + 1) * 3], [])) for e in range(4)]
    assert epochs == [list(range(5)) + [5 + 2 * e, 6 + 2 * e] for e in range(4)]
    full = document_plan(examples, TeacherConfig(epochs=4, batch_size=3))
    assert len(full) == 4 * 5 and all(sorted(sum(full[e * 5:(e + 1) * 5], [])) == list(range(13)) for e in range(4))
    with pytest.raises(ValueError, match="anchors_per_epoch"):
        TeacherConfig(anchors_per_epoch=0)


def test_config_roundtrip_and_validation(tmp_path):
    c = TeacherConfig(epochs=3, target_modules=("gate_proj", "q_proj"))
    assert TeacherConfig.from_dict(c.to_dict()) == c
    assert c.spec == LoraSpec(2, 32.0, ("gate_proj", "q_proj"))
    with pytest.raises(ValueError, match="schedule"):
        TeacherConfig(schedule="step")
    with pytest.raises(ValueError, match="unknown TeacherConfig fields"):
        TeacherConfig.from_dict({"epoch": 3})
    p = tmp_path / "t.yaml"
    p.write_text("# cmd\nepochs: 4\nlr: 3e-4\nkinds: [qa_closed]\n")  # YAML 1.1 reads 3e-4 as a string
    assert TeacherConfig.from_yaml(p) == TeacherConfig(epochs=4, lr=3e-4, kinds=("qa_closed",))
    assert isinstance(TeacherConfig.from_yaml(p).lr, float)


def test_shards_cover_exactly_once():
    ids = [f"doc-{i}" for i in range(200)]
    shards = [[d for d in ids if shard_of(d, 3) == i] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(ids) and all(shards)
    assert shard_of("doc-7", 3) == shard_of("doc-7", 3)
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(ValueError, match="i/N"):
        parse_shard("1-4")
    with pytest.raises(ValueError, match="0 <= i < N"):
        parse_shard("4/4")


def _write_corpus(path, docs):
    import json

    path.write_text("".join(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n" for d in docs))


def test_train_corpus_resumes_and_shards(tmp_path, tiny_tokenizer, monkeypatch, caplog):
    """Two shards fill one store exactly once, each logging its progress a group at a time (bars off); a rerun
    trains nothing; the manifest records the config."""
    from conftest import make_tiny_llama

    import training.teacher as teacher
    from hyperprag.core.store import AdapterStore

    make_tiny_llama().save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    docs, augs = _docs()
    by_id = {d.id: a for d, a in zip(docs, augs, strict=True)}
    monkeypatch.setattr(teacher, "_augment", lambda group, *a: [by_id[d.id] for d in group])
    _write_corpus(tmp_path / "corpus.jsonl", docs)
    config = TeacherConfig(epochs=1, lr=1e-2, docs_per_step=2)
    store = tmp_path / "store"
    with caplog.at_level(logging.INFO, logger="training.teacher"):
        runs = [teacher.train_corpus(str(tmp_path / "model"), tmp_path / "corpus.jsonl", store, config,
                                     shard=f"{i}/2", progress=False) for i in range(2)]
    progress = [r.getMessage() for r in caplog.records if " of " in r.getMessage()]
    assert [m.split(" in ")[0] for m in progress] == ["teacher 0/2: 2 of 2 documents", "teacher 1/2: 1 of 1 documents"]
    assert all(m.endswith("(ETA 0 s)") for m in progress)
    assert sum(r["trained"] for r in runs) == 3 and all(r["in_shard"] == r["trained"] for r in runs)
    opened = AdapterStore.open(store)
    assert sorted(opened.ids()) == ["d0", "d1", "d2"]
    assert opened.settings["teacher"] == config.to_dict()
    meta = opened.meta("d1")
    assert meta["steps"] > 0 and meta["final_loss"] > 0 and meta["seconds"] > 0 and meta["qa_pairs"] == 5
    # resume: nothing left to do
    again = teacher.train_corpus(str(tmp_path / "model"), tmp_path / "corpus.jsonl", store, config,
                                 shard="0/1", progress=False)
    assert again["trained"] == 0 and again["skipped_existing"] == 3
    # stored adapters are the ones train_documents makes
    direct = train_documents(make_tiny_llama(), tiny_tokenizer, docs[1:2], augs[1:2], config)[0]
    torch.testing.assert_close(opened.get("d1").B["up_proj"], direct.B["up_proj"], atol=1e-6, rtol=0)


def test_train_corpus_on_error_skip(tmp_path, tiny_tokenizer, monkeypatch):
    from conftest import make_tiny_llama

    import training.teacher as teacher

    make_tiny_llama().save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    docs, augs = _docs()
    empty = SimpleNamespace(qa=[], rewrites=[])
    monkeypatch.setattr(teacher, "_augment", lambda group, *a: [empty if d.id == "d0" else augs[1] for d in group])
    _write_corpus(tmp_path / "corpus.jsonl", docs[:2])
    args = (str(tmp_path / "model"), tmp_path / "corpus.jsonl", tmp_path / "store", TeacherConfig(epochs=1))
    with pytest.raises(ValueError, match="'d0'"):
        teacher.train_corpus(*args, progress=False)
    res = teacher.train_corpus(*args, on_error="skip", progress=False)
    assert res["trained"] == 1 and res["failed"][0]["id"] == "d0"


def test_anchor_pool_is_the_models_own_answers(tiny_llama, tiny_tokenizer):
    from training.teacher import anchor_pool

    pool = anchor_pool(tiny_llama, tiny_tokenizer, questions=("What is one plus one?", "Name a colour."),
                       max_new_tokens=4)
    assert all(q in ("What is one plus one?", "Name a colour.") and a for q, a in pool)
    assert anchor_pool(tiny_llama, tiny_tokenizer, questions=("What is one plus one?", "Name a colour."),
                       max_new_tokens=4) is pool  # cached per model
    docs, augs = _docs()
    config = TeacherConfig(kinds=("qa_closed",), anchors=1)
    per_doc = document_examples(tiny_tokenizer, docs, augs, config, tiny_llama)
    assert all(sum(e.kind == "anchor" for e in ex) == 1 for ex in per_doc)


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_model_yaml_matches_for_model(name):
    """configs/teacher/<model>.yaml and TeacherConfig.for_model give the same measured defaults."""
    path = TEACHER_CONFIGS / f"{name}.yaml"
    assert path.read_text().startswith("# ")  # first line: the command that runs it
    assert TeacherConfig.from_yaml(path) == TeacherConfig.for_model(name)


@pytest.mark.parametrize("path", sorted(TEACHER_CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_teacher_recipe_reads_and_names_its_command(path):
    """Each configs/teacher/*.yaml is a valid TeacherConfig and heads with the command that runs it."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"configs/teacher/{path.name}" in first
    assert isinstance(TeacherConfig.from_yaml(path), TeacherConfig)


def test_the_fast_smollm2_recipe_differs_from_the_default_only_where_it_says():
    """configs/teacher/smollm2-135m-fast.yaml: 2 anchors an epoch, batches of 4, bfloat16; all else the default."""
    fast = TeacherConfig.from_yaml(TEACHER_CONFIGS / "smollm2-135m-fast.yaml")
    default = TeacherConfig.for_model("smollm2-135m")
    assert fast == TeacherConfig.for_model("smollm2-135m", anchors_per_epoch=2, batch_size=4, dtype="bfloat16")
    assert fast.anchors == default.anchors == 16 and fast.epochs == default.epochs


def _kl_config(**kw) -> TeacherConfig:
    return TeacherConfig(**{"kinds": ("qa_closed",), "anchors": 2, "anchor_loss": "kl", "anchor_weight": 0.7,
                            "epochs": 2, "lr": 1e-2, "batch_size": 3, "seed": 1, **kw})


def test_kl_anchor_targets_every_position(tiny_llama, tiny_tokenizer):
    docs, augs = _docs()
    per_doc = document_examples(tiny_tokenizer, docs, augs, _kl_config(), tiny_llama)
    for ex in per_doc[0]:
        if ex.kind == "anchor":  # the whole sequence is a target (prompt included)
            assert ex.labels == ex.input_ids
        else:  # the document's own QA keeps the answer-only loss
            assert ex.num_targets < len(ex.input_ids) // 2


def test_kl_anchor_loss_is_zero_at_the_base_model(tiny_llama, tiny_tokenizer):
    """KL(base || base) = 0 on anchor rows, and the other rows keep their cross-entropy."""
    from training.teacher import base_target_logprobs

    docs, augs = _docs()
    examples = document_examples(tiny_tokenizer, docs, augs, _kl_config(), tiny_llama)[0]
    batch = collate(examples, tiny_tokenizer.pad_token_id)
    kl_rows = torch.tensor([e.kind == "anchor" for e in examples])
    assert kl_rows.any() and not kl_rows.all()
    with torch.no_grad():
        ce, rows = token_losses(tiny_llama, batch)
        mixed, _ = token_losses(tiny_llama, batch, kl_rows, base_target_logprobs(tiny_llama, batch, kl_rows))
    on = kl_rows[rows]
    torch.testing.assert_close(mixed[on], torch.zeros(int(on.sum())), atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[~on], ce[~on])


def test_kl_anchors_batched_equals_one_document_at_a_time(tiny_llama, tiny_tokenizer, float64_norms):
    """KL anchors keep the per-document exactness: K=3 in one pass equals each document trained alone
    (float64 norms: the two groupings share different prefixes, see the test above)."""
    base = copy.deepcopy(tiny_llama).double()
    docs, augs = _docs()
    together = train_documents(base, tiny_tokenizer, docs, augs, _kl_config(docs_per_step=3))
    alone = train_documents(base, tiny_tokenizer, docs, augs, _kl_config(docs_per_step=1))  # groups of one
    for d in range(3):
        assert alone[d].B["up_proj"].abs().max() > 1e-3
        for m in ("gate_proj", "up_proj", "down_proj"):
            torch.testing.assert_close(together[d].A[m], alone[d].A[m], atol=1e-9, rtol=0)
            torch.testing.assert_close(together[d].B[m], alone[d].B[m], atol=1e-9, rtol=0)


def test_kl_anchors_are_averaged_apart_from_the_documents_tokens(tiny_llama, tiny_tokenizer):
    """Step 0 (B = 0, so every anchor KL is 0): the loss is the mean cross-entropy of the document's own
    tokens alone; the many anchor positions do not dilute it as they would in one shared mean."""
    docs, augs = _docs()
    config = _kl_config(epochs=1, batch_size=16)  # one step holding every sequence
    w = train_documents(tiny_llama, tiny_tokenizer, docs[1:2], augs[1:2], config)[0]
    examples = document_examples(tiny_tokenizer, docs[1:2], augs[1:2], config, tiny_llama)[0]
    own = [e for e in examples if e.kind != "anchor"]
    with torch.no_grad():
        ce, _ = token_losses(tiny_llama, collate(own, tiny_tokenizer.pad_token_id))
    assert w.meta["steps"] == 1 and len(own) < len(examples)
    assert w.meta["first_loss"] == pytest.approx(float(ce.mean()), rel=1e-5)
