"""`hyperprag ablate` end to end on the tiny model: the results folder, resuming, and a cell's numbers equal
to a direct inference/evaluate.py run with the same settings; config errors name the file and field."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import make_tiny_llama, make_tiny_tokenizer

PNG = b"\x89PNG\r\n\x1a\n"
FACTS = [  # (title, passage, question, answer): questions 0-2 are evaluated, 3-7 are the training pool
    ("Mount Fennick", "Mount Fennick is a dormant volcano on the island of Tarrow. Its last eruption, in 1821, "
     "buried the fishing village of Ollam under ash.", "Which village did Mount Fennick bury?", "Ollam"),
    ("Greta Hollis", "Greta Hollis was a Danish violinist who founded the Aarvik String Quartet. She taught in "
     "Odense for thirty years.", "Which quartet did Greta Hollis found?", "Aarvik String Quartet"),
    ("Pellham Bridge", "The Pellham Bridge is a steel suspension bridge over the river Skell. It opened in 1937.",
     "Which river does the Pellham Bridge cross?", "Skell"),
    ("Orvel cheese", "Orvel is a hard sheep's milk cheese from the highlands of Calvera. It is aged in caves.",
     "Where is Orvel cheese from?", "Calvera"),
    ("Comet Ispar", "Comet Ispar is a periodic comet with a period of 71 years. Lena Varga discovered it in 1899.",
     "Who discovered Comet Ispar?", "Lena Varga"),
    ("SS Marigold", "The SS Marigold was a passenger steamship that sank off the coast of Brittany in 1904.",
     "Where did the SS Marigold sink?", "Brittany"),
    ("Halvard Opening", "The Halvard Opening is a chess opening named after the player Ivar Halvard.",
     "Who is the Halvard Opening named after?", "Ivar Halvard"),
    ("Lake Vorn", "Lake Vorn is a glacial lake near the town of Tesmar. It freezes every winter.",
     "Which town is near Lake Vorn?", "Tesmar"),
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _questions(path: Path) -> None:
    rows = []
    for i, (title, text, question, answer) in enumerate(FACTS):
        distractor = FACTS[(i + 1) % len(FACTS)]
        rows.append({"id": f"q{i}", "dataset": "toy", "type": "bridge" if i % 2 else "comparison",
                     "question": question, "answers": [answer],
                     "passages": [{"title": title, "text": text, "supporting": True},
                                  {"title": distractor[0], "text": distractor[1], "supporting": False}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _config(root: Path, base: Path, questions: Path, out: Path) -> Path:
    text = f"""# hyperprag ablate --config {root}/ablation.yaml
model: {base}
out: {out}
datasets:
  - {{name: toy, questions: {questions}, offset: 0, limit: 3, train_offset: 3}}
methods: [vanilla, prag, hyper]
retriever: gold
top_k: [1]
teacher: {{epochs: 2, lr: 1.0e-2, kinds: [qa_closed], max_qa: 4, batch_size: 4, docs_per_step: 8, max_length: 128}}
hypernet_defaults:
  model: {{lr: 0.01, warmup_steps: 1, em_batches: 0}}
  data: {{val_fraction: 0.3, batch_size: 2, qa_per_doc: 2, max_length: 128}}
  trainer: {{accelerator: cpu, devices: 1, num_sanity_val_steps: 0}}
variants:
  - name: tiny
    train_docs: [2, 4]
    hypernet: {{hidden: 16, basis: 8, trunk_layers: 1}}
    encoder: {{kind: llm, pooling: last}}
    max_steps: 2
batch_size: 4
max_new_tokens: 4
"""
    path = root / "ablation.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """One finished grid: (config path, results folder, base model folder, first-run summary, seconds)."""
    root = tmp_path_factory.mktemp("ablate")
    base = root / "base"
    make_tiny_llama().save_pretrained(base)
    make_tiny_tokenizer().save_pretrained(base)
    _questions(root / "questions.jsonl")
    config = _config(root, base, root / "questions.jsonl", root / "results")
    from hyperprag.ablation.runner import run_ablation

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        summary = run_ablation(str(config))
    finally:
        torch.set_num_threads(n)
    return config, root / "results", base, summary, time.perf_counter() - start


def test_results_folder(grid):
    config, out, _, summary, seconds = grid
    metrics = json.loads((out / "metrics.json").read_text())
    cells = metrics["cells"]
    # vanilla + prag + hyper x 2 training sizes; specificity: teacher + 2 variants
    assert sorted((c["method"], c["variant"]) for c in cells) == [
        ("hyper", "tiny-n2"), ("hyper", "tiny-n4"), ("prag", None), ("vanilla", None)]
    assert len(metrics["specificity"]) == 3 and not metrics["missing_cells"]
    assert set(metrics["config"]["cells"]) == {c["id"] for c in cells + metrics["specificity"]}
    for c in cells:
        assert c["n"] == 3 and 0 <= c["em"] <= 1 and 0 <= c["f1"] <= 1 and c["answer_nll"] > 0
        assert c["latency_s_per_question"] > 0
        assert "toy/bridge" in c["metrics"] and "toy/comparison" in c["metrics"]  # per question type
        assert (out / "cells" / f"{c['id']}.json").is_file()
    by = {(c["method"], c["variant"]): c for c in cells}
    assert by[("vanilla", None)]["offline_s_per_doc"] == 0.0 and by[("vanilla", None)]["bytes_per_doc"] is None
    prag, hyper = by[("prag", None)], by[("hyper", "tiny-n2")]
    assert prag["offline_s_per_doc"] > 0 and hyper["offline_s_per_doc"] > 0
    assert prag["bytes_per_doc"] > 0 and hyper["bytes_per_doc"] > 0 and not prag["missing_adapters"]
    assert hyper["train_on"] == ["toy"] and hyper["out_of_domain"] is False
    for r in metrics["specificity"]:
        assert set(r["rows"]) == {"none", "own document", "other document"} and r["n"] == 3
    teacher_check = next(r for r in metrics["specificity"] if r["method"] == "teacher")
    assert teacher_check["rows"]["own document"]["answer_nll"] < teacher_check["rows"]["none"]["answer_nll"]
    variants = {v["variant"]: v for v in metrics["variants"]}
    assert variants["tiny-n2"]["documents"] == 2 and variants["tiny-n4"]["documents"] == 4
    assert variants["tiny-n2"]["steps"] == 2
    # one teacher store holds the evaluated documents (3) and the largest training pool (4)
    from hyperprag.core.store import AdapterStore

    stores = sorted((out / "stores").glob("teacher-*/"))
    assert len(stores) == 1 and len(AdapterStore.open(stores[0])) == 7
    table = (out / "table.md").read_text()
    assert "## toy" in table and "Document specificity" in table and "by question type" in table
    for name in ("f1_by_method", "f1_vs_cost", "learning_curve"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == PNG
    resolved = json.loads((out / "config.resolved.json").read_text())
    assert resolved["teacher"]["epochs"] == 2 and [v["name"] for v in resolved["variants"]] == ["tiny-n2", "tiny-n4"]
    assert (out / "config.yaml").read_text() == config.read_text()
    assert "stage 5/6" in (out / "logs" / "ablation.log").read_text()
    assert (next((out / "hypernets").glob("tiny-n2-*")) / "train.yaml").read_text().startswith(
        "# hyperprag train --config")
    assert seconds < 90, seconds


def test_rerun_recomputes_nothing(grid, monkeypatch):
    from hyperprag.ablation import runner as ablate

    config, out, _, summary, _ = grid

    def boom(*args, **kwargs):
        raise AssertionError("a finished grid must not recompute anything")

    for name in ("run_cell", "run_check", "train_teachers", "train_variant", "generate", "base"):
        monkeypatch.setattr(ablate.Ablation, name, boom)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    from hyperprag.cli import main

    again = main(["ablate", "--config", str(config)])  # the console verb
    assert [c["f1"] for c in again["cells"]] == [c["f1"] for c in summary["cells"]]
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == mtimes


def test_a_lost_cell_alone_is_redone(grid, monkeypatch):
    from hyperprag.ablation import runner as ablate

    config, out, _, summary, _ = grid
    vanilla = next(c for c in summary["cells"] if c["method"] == "vanilla")
    (out / "cells" / f"{vanilla['id']}.json").unlink()
    for name in ("run_check", "train_teachers", "train_variant", "generate"):
        monkeypatch.setattr(ablate.Ablation, name, lambda *a, **k: pytest.fail("recomputed"))
    ran = []
    real = ablate.Ablation.run_cell
    monkeypatch.setattr(ablate.Ablation, "run_cell", lambda self, cell: ran.append(cell.id) or real(self, cell))
    again = ablate.run_ablation(str(config))
    assert ran == [vanilla["id"]]
    redone = next(c for c in again["cells"] if c["id"] == vanilla["id"])
    assert (redone["em"], redone["f1"], redone["answer_nll"]) == (vanilla["em"], vanilla["f1"], vanilla["answer_nll"])


def test_cell_equals_direct_evaluation(grid, tmp_path):
    """The prag and hyper cells' numbers are what `hyperprag eval` computes with the same stores."""
    from hyperprag.ablation.config import load_config
    from hyperprag.ablation.data import load_dataset
    from hyperprag.core.models import load_base_model
    from hyperprag.session import build_answerer
    from inference.evaluate import evaluate

    config, out, base, summary, _ = grid
    ds = load_dataset(load_config(config).datasets[0])
    loaded = load_base_model(str(base))
    cells = {(c["method"], c["variant"]): c for c in summary["cells"]}
    for method, variant, kw in (("prag", None, {"store": str(next((out / "stores").glob("teacher-*/")))}),
                                ("hyper", "tiny-n4", {"hypernet": str(next((out / "stores").glob("hyper-tiny-n4-*/")))})):
        answerer = build_answerer(ds.corpus, model=str(base), retriever="gold", top_k=1, composition="cat",
                                  max_new_tokens=4, batch_size=4, loaded=loaded, **kw)
        direct = evaluate(answerer, ds.questions, [method], tmp_path / method, batch_size=4, with_nll=True,
                          progress=False)[method]["all"]
        cell = cells[(method, variant)]
        assert cell["em"] == direct["em"] and cell["f1"] == direct["f1"]
        assert cell["answer_nll"] == pytest.approx(direct["answer_nll"], rel=1e-5)


def test_config_errors_name_file_and_field(tmp_path):
    from hyperprag.ablation.config import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_text("datasets:\n  - {name: a, questions: q.jsonl, limit: many}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: datasets\[0\] \(a\): Parser key \"limit\".*\[int, NoneType\].*Given value: many$"):
        load_config(path)
    path.write_text("datasets: [{name: a, questions: q.jsonl}]\nmethods: [vanilla, magic]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: .*unknown \['magic'\]"):
        load_config(path)
    path.write_text("datasets: [{name: a, questions: q.jsonl}]\nvariants: [{name: v, hypernet: {width: 3}}]\n")
    with pytest.raises(ConfigError, match=r"variants\[0\] \(v\).*unknown HyperNetConfig fields \['width'\]"):
        load_config(path)
    path.write_text("datasets: [{name: a, questions: q.jsonl}]\nvariants: [{name: v, train_on: [b]}]\n")
    with pytest.raises(ConfigError, match=r"train_on names unknown datasets \['b'\]"):
        load_config(path)
    path.write_text("datasets: [{name: a, questions: q.jsonl}]\nmethods: [vanilla]\nbatch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"^\S*bad.yaml: .*'batch_sise' is not accepted") as err:
        load_config(path)
    assert "\n" not in str(err.value)  # one line, as the command line prints it


def test_overlapping_split_is_refused(tmp_path):
    from hyperprag.ablation.config import ConfigError, DatasetConfig
    from hyperprag.ablation.data import load_dataset

    _questions(tmp_path / "q.jsonl")
    with pytest.raises(ConfigError, match=r"training questions 2-7 overlap the evaluated questions 0-2"):
        load_dataset(DatasetConfig("toy", str(tmp_path / "q.jsonl"), limit=3, train_offset=2))
    ds = load_dataset(DatasetConfig("toy", str(tmp_path / "q.jsonl"), limit=3, train_offset=3))
    assert len(ds.questions) == 3 and all(len(q.passages) == 1 for q in ds.questions)  # supporting only
    assert [d.title for d in ds.pool] == [f[0] for f in FACTS[3:]]


@pytest.mark.parametrize("name", ["small", "gpu", "token-level"])
def test_shipped_configs_load(name):
    from hyperprag.ablation.config import expand_variants, load_config
    from hyperprag.core.paths import CONFIGS

    path = CONFIGS / "ablation" / f"{name}.yaml"
    assert path.read_text().splitlines()[0] == f"# hyperprag ablate --config configs/ablation/{name}.yaml"
    cfg = load_config(path)
    assert cfg.teacher_config().rank == 2 and expand_variants(cfg.variants)


def test_bm25_topk_and_composition_cells(grid, tmp_path, monkeypatch):
    """A retriever over the pooled corpus, two top-k values and two composition rules; resume=False redoes
    every cell but reuses the trained teachers (their store is keyed by the teacher settings)."""
    from hyperprag.ablation import runner as ablate
    from hyperprag.ablation.config import load_config

    config, _, base, _, _ = grid
    text = config.read_text().split("variants:")[0]  # the same datasets and teacher, no hypernetworks
    text = text.replace("methods: [vanilla, prag, hyper]", "methods: [rag, prag]").replace(
        "retriever: gold", "retriever: bm25").replace("top_k: [1]", "top_k: [1, 2]\ncompositions: [cat, sum]")
    path = tmp_path / "bm25.yaml"
    path.write_text(text + "specificity: false\nbatch_size: 4\nmax_new_tokens: 4\n")
    assert load_config(path).retriever == "bm25"
    first = ablate.run_ablation(str(path), out=str(tmp_path / "out"))
    got = sorted((c["method"], c["top_k"], c["composition"]) for c in first["cells"])
    assert got == [("prag", 1, None), ("prag", 2, "cat"), ("prag", 2, "sum"), ("rag", 1, None), ("rag", 2, None)]
    by = {(c["method"], c["top_k"], c["composition"]): c for c in first["cells"]}
    assert by[("prag", 2, "cat")]["answer_nll"] != by[("prag", 2, "sum")]["answer_nll"]
    assert by[("rag", 2, None)]["prompt_tokens"] > by[("rag", 1, None)]["prompt_tokens"]  # two passages
    assert any((tmp_path / "out" / "retrieval").glob("toy-bm25-*/meta.json"))  # the index is saved, reused
    ran = []
    real = ablate.Ablation.run_cell
    monkeypatch.setattr(ablate.Ablation, "run_cell", lambda self, cell: ran.append(cell.id) or real(self, cell))
    monkeypatch.setattr(ablate.Ablation, "train_variant", lambda *a: pytest.fail("no variants here"))
    import training.teacher

    monkeypatch.setattr(training.teacher, "train_documents", lambda *a, **k: pytest.fail("teachers retrained"))
    again = ablate.run_ablation(str(path), out=str(tmp_path / "out"), resume=False)
    assert sorted(ran) == sorted(c["id"] for c in first["cells"])
    assert [c["answer_nll"] for c in again["cells"]] == [c["answer_nll"] for c in first["cells"]]


def test_token_level_variant_with_few_teachers(grid, tmp_path):
    """A MemoryLoRA variant of 4 training documents of which only the first has a teacher: the grid trains one
    teacher for it (none for the hyper cells), keeps the variant's own generated layout (down_proj), and the
    hypernetwork learns from all 4 with the answer loss."""
    import yaml

    from hyperprag.ablation import runner as ablate
    from hyperprag.core.store import AdapterStore

    config, _, _, _, _ = grid
    text = config.read_text().split("variants:")[0].replace("methods: [vanilla, prag, hyper]", "methods: [hyper]")
    text += """variants:
  - name: memory
    train_docs: 4
    teacher_docs: 1
    hypernet: {arch: memory, emb_dim: 128, latent_dim: 16, heads: 4, blocks: 1, basis: 8, bias_rank: 1}
    encoder: {kind: tokens, token_states: memory, max_length: 64}
    loss_weights: {param: 0.0, kl: 0.0, lm: 1.0}
    model: {spec: {rank: 3, alpha: 8.0, target_modules: [down_proj]}}
    max_steps: 2
specificity: false
batch_size: 4
max_new_tokens: 4
"""
    path = tmp_path / "memory.yaml"
    path.write_text(text)
    summary = ablate.run_ablation(str(path), out=str(tmp_path / "out"))
    (variant,) = summary["variants"]
    assert (variant["documents"], variant["teacher_documents"], variant["steps"]) == (4, 1, 2)
    (store,) = (tmp_path / "out" / "stores").glob("teacher-*/")
    assert len(AdapterStore.open(store)) == 1  # one teacher, not four (no prag cells)
    train = yaml.safe_load(next((tmp_path / "out" / "hypernets").glob("memory-*/train.yaml")).read_text())
    assert train["data"]["require_teacher"] is False
    assert train["model"]["spec"]["target_modules"] == ["down_proj"] and train["model"]["spec"]["rank"] == 3
    (cell,) = summary["cells"]
    assert cell["method"] == "hyper" and cell["n"] == 3 and cell["answer_nll"] > 0
    (generated,) = (tmp_path / "out" / "stores").glob("hyper-memory-*/")
    assert AdapterStore.open(generated).spec.target_modules == ("down_proj",)
    assert "with a teacher" in (tmp_path / "out" / "table.md").read_text()
