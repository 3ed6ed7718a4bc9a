"""Lightning training of the hypernetwork on the tiny model: overfit, validation metrics, checkpoints and
resume, the YAML CLI end to end (corpus + teacher store + augmentations), and two-process CPU DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import yaml
from safetensors.torch import load_file

from hypernet.checkpoint import load_hypernet
from hypernet.config import HyperNetConfig, LossWeights
from hyperprag.core.data import Document
from hyperprag.core.lora import LoraSpec, LoraWeights
from training.hypernet_data import HyperDataModule, split_by_document

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "hypernet"))
from hyper_synth import EMB_DIM, random_teacher, small_module, synthetic_items  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _trainer(root, steps=None, epochs=None, callbacks=(), **kw) -> pl.Trainer:
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps or -1, max_epochs=epochs, callbacks=list(callbacks),
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root), **kw)


class _Record(pl.Callback):
    def __init__(self):
        self.rows: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append({k[6:]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def _trained_teachers(model, tok, items):
    """Real PRAG teachers for the synthetic documents: a few steps of training/teacher.py each."""
    from training.teacher import TeacherConfig, train_documents

    docs = [Document(it.doc_id, "t", "x") for it in items]
    augs = [SimpleNamespace(qa=[SimpleNamespace(question=q, answer=a[0], full_answer="") for q, a in it.qa],
                            rewrites=[]) for it in items]
    cfg = TeacherConfig(epochs=30, lr=1e-2, kinds=("qa_closed",), batch_size=4, max_length=128)
    for it, w in zip(items, train_documents(model, tok, docs, augs, cfg), strict=True):
        it.teacher = w


def _mean(rows, key, sl):
    xs = [r[key] for r in rows[sl]]
    return sum(xs) / len(xs)


def test_overfit_three_documents(tiny_llama, tiny_tokenizer, tmp_path):
    """All three losses on 3 documents with trained teachers: the loss falls clearly, the generated adapters
    answer better than no adapter and better with their own document than with another's."""
    pl.seed_everything(0)
    spec = LoraSpec()
    items = synthetic_items(tiny_tokenizer, tiny_llama, spec, n_docs=3, qa_per_doc=3)
    _trained_teachers(tiny_llama, tiny_tokenizer, items)
    dm = HyperDataModule.from_items(items, items, tiny_tokenizer.pad_token_id, batch_size=3, qa_per_doc=3)
    module = small_module(tiny_llama, tiny_tokenizer, spec, lr=1e-2, warmup_steps=1, schedule="constant")
    rec = _Record()
    trainer = _trainer(tmp_path, steps=60, callbacks=[rec], check_val_every_n_epoch=1000, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    first, last = _mean(rec.rows, "loss", slice(0, 3)), _mean(rec.rows, "loss", slice(-3, None))
    assert last < 0.9 * first, (first, last)
    assert _mean(rec.rows, "lm", slice(-3, None)) < _mean(rec.rows, "lm", slice(0, 3)) - 0.5
    assert bool(module.hypernet.calibrated)  # output scales were set from the teachers
    val = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert val["val/lm"] < val["val/lm_none"] - 0.5
    assert val["val/lm"] < val["val/lm_teacher"] + 0.1  # as good as the teachers on their own sequences
    assert val["val/lm_gap"] > 0.02  # each document's own adapter beats its neighbour's
    assert val["val/lm_other"] == pytest.approx(val["val/lm"] + val["val/lm_gap"], abs=1e-5)
    for key in ("val/kl", "val/param_coord", "val/param_deltaw", "val/dw_cos_generated", "val/dw_cos_teacher",
                "val/em_hyper", "val/em_teacher", "val/em_none"):
        assert key in val and val[key] == val[key], key  # present and not nan
    assert -1 <= val["val/dw_cos_generated"] < 0.99  # the generated updates differ between documents


def test_parameter_loss_alone_fits_the_teachers(tiny_llama, tiny_tokenizer, tmp_path):
    pl.seed_everything(0)
    spec = LoraSpec()
    items = synthetic_items(tiny_tokenizer, tiny_llama, spec, n_docs=3, qa_per_doc=2)
    dm = HyperDataModule.from_items(items, items, tiny_tokenizer.pad_token_id, batch_size=3)
    module = small_module(tiny_llama, tiny_tokenizer, spec, lr=1e-2, warmup_steps=1, schedule="constant",
                          loss_weights=LossWeights(param=1.0, kl=0.0, lm=0.0))
    rec = _Record()
    _trainer(tmp_path, steps=80, callbacks=[rec], limit_val_batches=0).fit(module, datamodule=dm)
    assert "lm" not in rec.rows[0]  # no base-model forward when only the parameter loss is on
    assert rec.rows[-1]["param_deltaw"] < 0.5 * rec.rows[0]["param_deltaw"], (rec.rows[0], rec.rows[-1])


def test_teacher_adapter_metrics_are_consistent(tiny_llama, tiny_tokenizer, tmp_path):
    """Zero teachers: the teacher answer loss is the no-adapter loss, and KL compares against the base model."""
    spec = LoraSpec()
    items = synthetic_items(tiny_tokenizer, tiny_llama, spec, n_docs=2, qa_per_doc=2)
    for it in items:
        it.teacher = LoraWeights({m: a for m, a in it.teacher.A.items()},
                                 {m: torch.zeros_like(b) for m, b in it.teacher.B.items()})
    dm = HyperDataModule.from_items(items, items, tiny_tokenizer.pad_token_id, batch_size=2)
    module = small_module(tiny_llama, tiny_tokenizer, spec, em_batches=0)
    val = _trainer(tmp_path).validate(module, datamodule=dm, verbose=False)[0]
    assert val["val/lm_teacher"] == pytest.approx(val["val/lm_none"], abs=1e-5)
    assert "val/em_hyper" not in val
    assert 0 <= val["val/kl"] < 1e-3  # the first generated adapters are near zero


def test_checkpoint_resume_and_export(tiny_llama, tiny_tokenizer, tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    pl.seed_everything(0)
    spec = LoraSpec()
    items = synthetic_items(tiny_tokenizer, tiny_llama, spec, n_docs=6, qa_per_doc=2)
    dm = HyperDataModule.from_items(items[:4], items[4:], tiny_tokenizer.pad_token_id, batch_size=2)

    def run(epochs, ckpt_path=None):
        module = small_module(tiny_llama, tiny_tokenizer, spec, lr=1e-2, warmup_steps=1, em_batches=1)
        cb = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/loss", save_last=True, save_top_k=1)
        trainer = _trainer(tmp_path, epochs=epochs, callbacks=[cb], enable_checkpointing=True,
                           logger=CSVLogger(tmp_path, name="csv"))
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return trainer, module, cb

    trainer, module, cb = run(2)
    assert trainer.global_step == 4
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"] and all(k.startswith("hypernet.") for k in ckpt["state_dict"])  # no base model
    exported = load_hypernet(tmp_path / "hypernet", expect_base_model="tiny-llama", expect_spec=spec)
    best = torch.load(cb.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in exported.model.state_dict().items():
        assert torch.equal(v, best[f"hypernet.{k}"]), k
    assert exported.meta["checkpoint"] == cb.best_model_path and exported.meta["monitor"] == "val/loss"
    assert exported.config.emb_dim == EMB_DIM
    # resume: continues from step 4 with the same weights, optimizer and calibration
    trainer2, module2, _ = run(3, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"))
    assert trainer2.global_step == 6 and trainer2.current_epoch == 3
    metrics = (tmp_path / "csv").rglob("metrics.csv")
    assert any("val/lm_gap" in p.read_text() for p in metrics)


def test_augmentations_from_a_cache_folder_or_jsonl(tmp_path):
    from training.augment.cache import save_cached
    from training.augment.records import Augmentation, QAPair
    from training.hypernet_data import load_augmentation_map

    a_rules = Augmentation("d1", "h1", qa=[QAPair("Q?", "A", "", "rules")])
    a_llm = Augmentation("d1", "h1", qa=[QAPair("Q2?", "B", "", "llm")])
    save_cached(tmp_path / "c" / "h1-k1.json", a_rules, {"method": "rules"})
    time.sleep(0.01)
    save_cached(tmp_path / "c" / "h1-k2.json", a_llm, {"method": "llm"})
    assert load_augmentation_map(tmp_path / "c")["h1"].qa[0].answer == "B"  # the newest
    assert load_augmentation_map(tmp_path / "c", method="rules")["h1"].qa[0].answer == "A"
    (tmp_path / "a.jsonl").write_text(json.dumps(a_rules.to_dict()) + "\n" + '{"doc_id": 3}\n{"x"')
    with pytest.raises(ValueError, match="a.jsonl, line 2: not an augmentation record"):
        load_augmentation_map(tmp_path / "a.jsonl")
    (tmp_path / "a.jsonl").write_text(json.dumps(a_rules.to_dict()) + "\n")
    m = load_augmentation_map(tmp_path / "a.jsonl")
    assert m["d1"] is m["h1"]


def test_split_is_by_document_and_seeded():
    ids = [f"d{i}" for i in range(20)]
    train, val = split_by_document(ids, 0.25, seed=1)
    assert len(val) == 5 and not set(train) & set(val) and sorted(train + val) == sorted(ids)
    assert split_by_document(list(reversed(ids)), 0.25, seed=1) == (train, val)  # order-free, seeded
    assert split_by_document(ids, 0.25, seed=2)[1] != val


def test_passage_share_sets_how_many_sampled_sequences_carry_the_document():
    """qa_per_doc 4 at passage_share 0.25: exactly 1 in-context and 3 closed-book sequences a document, every
    batch; without it both kinds are drawn alike; a document short of one kind is filled with the other."""
    from training.hypernet_data import DocCollator, DocItem
    from training.sequences import Example

    def item(doc_id: str, closed: int, inside: int) -> DocItem:
        kinds = ["qa_closed"] * closed + ["qa_passage"] * inside
        return DocItem(doc_id, None, [Example(0, k, [1, 2, 3], [-100, -100, 3]) for k in kinds])

    def kinds(collator, it) -> list[str]:
        return [it.examples[j].kind for j in collator._pick(it.examples)]

    torch.manual_seed(0)
    share = DocCollator(pad_id=0, qa_per_doc=4, em_per_doc=0, shuffle=True, passage_share=0.25)
    even = DocCollator(pad_id=0, qa_per_doc=4, em_per_doc=0, shuffle=True)
    doc = item("d", closed=10, inside=10)
    picks = [kinds(share, doc) for _ in range(50)]
    assert all(k.count("qa_passage") == 1 and k.count("qa_closed") == 3 for k in picks)
    assert len({tuple(share._pick(doc.examples)) for _ in range(20)}) > 1  # still a random draw
    inside = sum(kinds(even, doc).count("qa_passage") for _ in range(200)) / 800
    assert 0.4 < inside < 0.6
    assert kinds(share, item("few", closed=2, inside=10)).count("qa_passage") == 2  # 4 asked, 2 closed-book
    assert kinds(share, item("none", closed=10, inside=0)) == ["qa_closed"] * 4
    batch = share([(doc, None), (item("e", 6, 6), None)])
    assert batch["doc_index"].tolist() == [0] * 4 + [1] * 4
    with pytest.raises(ValueError, match="passage_share 0.5 needs .* qa_passage"):
        HyperDataModule(sequence_kinds=("qa_closed",), passage_share=0.5)


def _write_dataset(root: Path, model, tok, spec: LoraSpec) -> dict:
    """A corpus, its augmentations and a teacher store on disk, for the tiny model saved as a folder."""
    from hyperprag.core.lora import target_shapes
    from hyperprag.core.store import AdapterStore
    from training.augment.cache import cache_key, cache_path, save_cached
    from training.augment.records import Augmentation, QAPair

    base = root / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    facts = [("Lake Vorn", "Where is Lake Vorn?", "Tesmar"), ("Oro", "What colour is oro?", "blue"),
             ("Kiro", "Which river runs through Kiro?", "Vask"), ("Greta", "What did Greta play?", "violin"),
             ("Ispar", "Who found Comet Ispar?", "Lena"), ("Pell", "What is Pell known for?", "fruit")]
    docs = [Document(f"doc{i}", t, f"{t} fact: {a}.") for i, (t, _, a) in enumerate(facts)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n"
                                               for d in docs))
    augs = [Augmentation(d.id, d.content_hash, qa=[QAPair(q, a, "", "rules")])
            for d, (_, q, a) in zip(docs, facts, strict=True)]
    for a in augs:  # the augmentation cache folder training/augment writes
        save_cached(cache_path(root / "aug", a.content_hash, cache_key(a.content_hash, "rules", None, {})), a,
                    {"method": "rules"})
    shapes = target_shapes(model, spec)
    with AdapterStore.create(root / "store", base_model=str(base), spec=spec) as store:
        for i, d in enumerate(docs[:5]):  # doc5 has no teacher: skipped with a warning
            store.put(d.id, random_teacher(shapes, spec, i))
    return {"base": str(base), "corpus": str(root / "corpus.jsonl"), "aug": str(root / "aug"),
            "store": str(root / "store")}


def _yaml(root: Path, paths: dict, epochs: int) -> Path:
    cfg = f"""# python -m training.hypernet_cli --config {root}/cfg.yaml
seed_everything: 0
model:
  base_model: {paths['base']}
  hypernet: {{hidden: 16, basis: 8, trunk_layers: 1}}
  lr: 0.01
  warmup_steps: 1
  em_batches: 1
  em_max_new_tokens: 4
data:
  corpus: {paths['corpus']}
  teacher_store: {paths['store']}
  augmentations: {paths['aug']}
  encoder: {{kind: llm, pooling: last}}
  embedding_cache_dir: {root}/emb
  val_fraction: 0.4
  batch_size: 2
trainer:
  default_root_dir: {root}/run
  max_epochs: {epochs}
  accelerator: cpu
  devices: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: pytorch_lightning.loggers.CSVLogger
    init_args: {{save_dir: {root}/run, name: csv}}
"""
    path = root / "cfg.yaml"
    path.write_text(cfg)
    return path


def test_cli_trains_from_files_resumes_and_exports(tiny_llama, tiny_tokenizer, tmp_path):
    import copy

    from training.hypernet_cli import run_train

    spec = LoraSpec()
    paths = _write_dataset(tmp_path, copy.deepcopy(tiny_llama), tiny_tokenizer, spec)
    out = run_train(["--config", str(_yaml(tmp_path, paths, epochs=1))])
    assert out == tmp_path / "run" / "hypernet"
    loaded = load_hypernet(out, expect_base_model=paths["base"], expect_spec=spec)
    assert loaded.encoder.kind == "llm" and loaded.config.emb_dim == 64  # the tiny model's hidden size
    assert len(list((tmp_path / "emb").glob("*.safetensors"))) == 1  # embeddings cached once
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    assert (tmp_path / "run" / "csv").exists()
    # resume from the last checkpoint for one more epoch
    run_train(["--config", str(_yaml(tmp_path, paths, epochs=2)), "--ckpt_path", "last"])
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 2  # 3 train docs, batch 2, last one dropped: 1 step an epoch


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    """Lightning DDP over gloo: the ranks see different documents and end with identical weights."""
    script = HERE.parents[1] / "hypernet" / "hyper_synth.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(HERE.parents[2])}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120, cwd=str(HERE.parents[2]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == r1["steps"] == 3
    assert len(r0["seen"]) == len(r1["seen"]) == 3 and not set(r0["seen"]) & set(r1["seen"])
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    init = small_module_state()
    params = [k for k in w0 if "scale" not in k and k != "calibrated"]  # not the calibrated buffers
    assert any(not torch.equal(w0[k], init[k]) for k in params)  # it trained
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k


def small_module_state() -> dict:
    """The DDP worker's initial hypernetwork weights (same seed, same construction)."""
    from conftest import make_tiny_llama, make_tiny_tokenizer

    pl.seed_everything(0, workers=True)
    model, tok = make_tiny_llama(), make_tiny_tokenizer()
    synthetic_items(tok, model, LoraSpec(), n_docs=8, qa_per_doc=2)
    return {k: v.clone() for k, v in small_module(model, tok, LoraSpec()).hypernet.state_dict().items()}


def test_module_refuses_mismatched_embeddings(tiny_llama, tiny_tokenizer, tmp_path):
    spec = LoraSpec()
    items = synthetic_items(tiny_tokenizer, tiny_llama, spec, n_docs=2)
    dm = HyperDataModule.from_items(items, items, tiny_tokenizer.pad_token_id, batch_size=2)
    module = small_module(tiny_llama, tiny_tokenizer, spec, hypernet=HyperNetConfig(emb_dim=EMB_DIM + 1))
    with pytest.raises(ValueError, match="embeddings are 16-d, the hypernetwork expects 17-d"):
        _trainer(tmp_path, steps=1).fit(module, datamodule=dm)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["dyprag_baseline.yaml"], ["ddp_cpu.yaml"], ["csv_logger.yaml"]])
def test_shipped_configs_parse(extra, tmp_path, monkeypatch):
    """configs/hypernet/*.yaml build the module, data and trainer they describe (SmolLM2's config only)."""
    from training.hypernet_cli import HyperCLI, default_trainer
    from training.hypernet_module import HyperLoRAModule

    monkeypatch.chdir(tmp_path)  # relative run folders land here
    folder = HERE.parents[2] / "configs" / "hypernet"
    args = ["--config", str(folder / "smollm2_demo.yaml")]
    for name in extra:
        args += ["--config", str(folder / name)]
    cli = HyperCLI(HyperLoRAModule, HyperDataModule, args=args, run=False, trainer_defaults=default_trainer())
    first = (folder / "smollm2_demo.yaml").read_text().splitlines()[0]
    assert first == "# hyperprag train --config configs/hypernet/smollm2_demo.yaml"
    model, dm = cli.model, cli.datamodule
    assert dm.base_model == model.hparams.base_model == "smollm2-135m"
    assert model.encoder_spec == dm.encoder  # linked from the data section
    assert model.shapes["down_proj"] == (30, 1536, 576)
    if extra == ["dyprag_baseline.yaml"]:
        assert type(model.hypernet).__name__ == "DyPRAGBaseline" and model.config.emb_dim == 576
    else:
        assert type(model.hypernet).__name__ == "HyperLoRA" and model.config.emb_dim == 384
    if extra == ["ddp_cpu.yaml"]:
        assert type(cli.trainer.strategy).__name__ == "DDPStrategy"
    logger = type(cli.trainer.logger).__name__
    assert logger == ("CSVLogger" if extra == ["csv_logger.yaml"] else "WandbLogger")
    assert cli.trainer.checkpoint_callback.monitor == "val/loss"


STANDALONE = sorted(p.name for p in (HERE.parents[2] / "configs" / "hypernet").glob("*.yaml")
                    if p.read_text().splitlines()[0] == f"# hyperprag train --config configs/hypernet/{p.name}")


@pytest.mark.slow
@pytest.mark.parametrize("name", STANDALONE)
def test_every_standalone_config_builds_its_architecture(name, tmp_path, monkeypatch):
    """Each config that heads with its own command builds the network its `hypernet.arch` names, with an
    input that fits its encoder (GPU-only settings and second-stage starting points overridden here)."""
    from hypernet.config import TOKEN_ARCHS
    from training.hypernet_cli import HyperCLI, default_trainer
    from training.hypernet_module import HyperLoRAModule

    monkeypatch.chdir(tmp_path)
    args = ["--config", str(HERE.parents[2] / "configs" / "hypernet" / name), "--model.init_from", "null",
            "--trainer.accelerator", "cpu", "--trainer.precision", "32-true"]
    cli = HyperCLI(HyperLoRAModule, HyperDataModule, args=args, run=False, trainer_defaults=default_trainer())
    model, dm = cli.model, cli.datamodule
    arch = model.config.arch
    expected = {"hyperlora": "HyperLoRA", "dyprag": "DyPRAGBaseline", "perceiver": "PerceiverLoRA",
                "outer": "OuterLoRA", "memory": "MemoryLoRA"}[arch]
    assert type(model.hypernet).__name__ == expected
    assert (dm.encoder.kind == "tokens") == (arch in TOKEN_ARCHS)
    assert {m: s[0] for m, s in model.shapes.items()} == {m: 30 for m in model.spec.target_modules}  # SmolLM2
    if arch in TOKEN_ARCHS:  # the generated slots fit in the rank beside the document-independent ones
        assert model.spec.rank > model.config.bias_rank


MEMORY_STAGES = {"smollm2_memory_keep": "smollm2_memory_demo", "smollm2_memory_longer": "smollm2_memory_keep",
                 "smollm2_memory_prose": "smollm2_memory_longer", "smollm2_memory_prose2": "smollm2_memory_prose",
                 "smollm2_memory_prose3": "smollm2_memory_prose2", "smollm2_memory_combine": "smollm2_memory_prose2",
                 "smollm2_memory_closed": "smollm2_memory_combine", "smollm2_memory_more": "smollm2_memory_closed"}
"""The demo checkpoint's stages after the first (smollm2_memory_demo), each with the stage it starts from. Two
start from stage 6 (prose2): stage 7 (prose3), measured and not shipped, and stage 8 (combine), shipped;
stage 9 (closed) goes on from stage 8, stage 10 (more) from stage 9 (docs/specificity.md)."""


@pytest.mark.slow
def test_the_shipped_memory_recipe_stages_compose(tmp_path, monkeypatch):
    """Each stage after the first is the first stage's config with its own on top (the command heading it),
    starting from the previous stage's result and writing its own run folder."""
    from training.hypernet_cli import HyperCLI, default_trainer
    from training.hypernet_module import HyperLoRAModule

    monkeypatch.chdir(tmp_path)
    folder = HERE.parents[2] / "configs" / "hypernet"
    first = "smollm2_memory_demo"
    clis = {}
    for stage, previous in MEMORY_STAGES.items():
        path = folder / f"{stage}.yaml"
        assert path.read_text().splitlines()[0] == (f"# hyperprag train --config configs/hypernet/{first}.yaml "
                                                    f"--config configs/hypernet/{stage}.yaml")
        run_dir = f"runs/hypernet/{stage.replace('_', '-')}"  # smollm2_memory_keep -> runs/hypernet/smollm2-memory-keep
        assert yaml.safe_load(path.read_text())["model"]["init_from"] == f"runs/hypernet/{previous.replace('_', '-')}/hypernet"
        clis[stage] = cli = HyperCLI(HyperLoRAModule, HyperDataModule, run=False, trainer_defaults=default_trainer(),
                                     args=["--config", str(folder / f"{first}.yaml"), "--config", str(path),
                                           "--model.init_from", "null"])
        assert cli.trainer.default_root_dir == run_dir
        assert type(cli.model.hypernet).__name__ == "MemoryLoRA" and cli.model.loss_weights.lm == 1.0
    # stage 3 weights the anchor KL 10 for 40 steps; 4 anchors and a fresh lower schedule from stage 4 on
    keep = clis["smollm2_memory_keep"]
    assert keep.model.loss_weights.anchor == 10.0 and keep.model.hparams.anchors == 2 and keep.trainer.max_steps == 40
    assert keep.config["model"]["warmup_steps"] == 5
    for stage in list(MEMORY_STAGES)[1:-2]:  # stages 4 to 8
        model = clis[stage].model
        assert model.loss_weights.anchor == 10.0 and model.hparams.anchors == 4 and model.hparams.lr == 3e-4
        assert clis[stage].trainer.max_steps == (150 if stage == "smollm2_memory_prose3" else 100)
    # the combine stage takes the answer loss closed-book and with the passage in the prompt
    assert clis["smollm2_memory_combine"].datamodule.sequence_kinds == ("qa_closed", "qa_passage")
    assert clis["smollm2_memory_prose2"].datamodule.sequence_kinds == ("qa_closed",)
    # stage 9 goes on from stage 8 with 3 of 4 questions closed-book and 6 anchors
    closed = clis["smollm2_memory_closed"]
    assert closed.datamodule.passage_share == 0.25 and closed.model.hparams.anchors == 6
    assert clis["smollm2_memory_combine"].datamodule.passage_share is None
    # stage 10 keeps stage 9's mix, adds stage 7's prose documents, at stage 4-8's learning rate
    more = clis["smollm2_memory_more"]
    assert more.datamodule.passage_share == 0.25 and more.model.hparams.anchors == 6 and more.model.hparams.lr == 3e-4
    assert "runs/data/prose3/corpus.jsonl" in more.config["data"]["corpus"] and more.trainer.max_steps == 100
    # stages 5 to 7 add the prose-style documents
    assert "runs/data/prose/corpus.jsonl" in clis["smollm2_memory_prose"].config["data"]["corpus"]
    assert "runs/data/prose2/corpus.jsonl" in clis["smollm2_memory_prose2"].config["data"]["corpus"]
    assert "runs/data/prose3/corpus.jsonl" in clis["smollm2_memory_prose3"].config["data"]["corpus"]
