"""The main job (`hyperprag demo`) on a tiny Llama folder: every mode, prag rows where teacher LoRAs exist."""

import json

import pytest
import torch

from hypernet.checkpoint import save_hypernet
from hypernet.config import EncoderSpec, HyperNetConfig
from hypernet.model import build_hypernet
from hyperprag.core.lora import LoraSpec, LoraWeights, init_lora, target_shapes
from hyperprag.core.prompts import answer_completion, answer_prompt
from hyperprag.core.store import AdapterStore
from hyperprag.demo import load_demo_corpus, load_demo_questions
from hyperprag.pipeline import run_demo
from inference.generate import answer_nll
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

SPEC = LoraSpec(rank=2, alpha=32)
TAUGHT = 5  # unseen documents that get a (random) teacher LoRA


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    model_dir, hyper_dir, teacher_dir = root / "tiny-model", root / "hypernet", root / "teacher"
    model = make_tiny_llama()
    model.save_pretrained(model_dir)
    make_tiny_tokenizer().save_pretrained(model_dir)
    shapes = target_shapes(model, SPEC)
    config = HyperNetConfig(emb_dim=model.config.hidden_size, hidden=32, basis=8, b_scale=0.05, b_init=1.0)
    torch.manual_seed(0)
    save_hypernet(hyper_dir, build_hypernet(config, shapes, SPEC), config, SPEC, str(model_dir),
                  EncoderSpec(kind="llm", max_length=128), shapes)
    docs = load_demo_corpus("unseen")[:TAUGHT]
    with AdapterStore.create(teacher_dir, str(model_dir), SPEC) as store:
        for i, d in enumerate(docs):
            w = init_lora(shapes, SPEC, seed=i)
            store.put(d.id, LoraWeights(w.A, {m: torch.randn_like(b) * 0.05 for m, b in w.B.items()}))
    with torch.no_grad():
        result = run_demo(model=str(model_dir), out=str(root / "out"), hypernet=str(hyper_dir),
                          teacher=str(teacher_dir), batch_size=8, max_new_tokens=3)
    return result, root, teacher_dir


def test_every_mode_is_answered_and_prag_only_where_a_teacher_lora_exists(demo_run):
    result, root, _ = demo_run
    metrics = result["metrics"]
    n = len(load_demo_questions("unseen"))
    assert list(metrics) == ["vanilla", "rag", "prag", "prag-combine", "hyper", "hyper-combine"]
    assert {m: metrics[m]["all"]["n"] for m in metrics} == {"vanilla": n, "rag": n, "prag": 2 * TAUGHT,
                                                             "prag-combine": 2 * TAUGHT, "hyper": n,
                                                             "hyper-combine": n}
    # the answer loss is measured in the closed-book modes only
    assert [m for m in metrics if "answer_nll" in metrics[m]["all"]] == ["vanilla", "prag", "hyper"]
    saved = json.loads((root / "out" / "result.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(metrics))
    # the evaluation's own files hold every mode, prag with its subset
    assert json.loads((root / "out" / "eval" / "metrics.json").read_text()) == saved["metrics"]
    table = (root / "out" / "table.md").read_text()
    assert "| prag-combine |" in table and "teacher: other document" in table


def test_specificity_rows_reuse_and_match_the_evaluation(demo_run):
    result, _, teacher_dir = demo_run
    check, metrics = result["specificity"], result["metrics"]
    assert list(check) == ["none", "generated: own document", "generated: other document",
                           "teacher: own document", "teacher: other document"]
    assert check["none"]["answer_nll"] == metrics["vanilla"]["all"]["answer_nll"]
    assert check["teacher: own document"]["n"] == 2 * TAUGHT
    # the teacher's other-document row, recomputed here from the store and the derangement's partners
    store = AdapterStore.open(teacher_dir)
    assert check["teacher: other document"]["answer_nll"] != pytest.approx(check["teacher: own document"]["answer_nll"])
    assert set(store.ids()) == {d.id for d in load_demo_corpus("unseen")[:TAUGHT]}
    assert set(result["general"]) == {"no adapter", "with hypernetwork document adapters (12 different)",
                                      f"with teacher document adapters ({TAUGHT} different)"}


def test_combine_rows_ask_as_the_combine_modes_do(demo_run):
    """The with-passage check asks with the combine modes' prompts and reuses their rows; the other-document
    rows are its own."""
    from hyperprag.core.models import load_base_model
    from inference.answer import make_answerer
    from inference.checks import check_prompts, own_documents

    result, root, _ = demo_run
    combine, metrics = result["specificity_combine"], result["metrics"]
    assert list(combine) == ["none", "generated: own document", "generated: other document",
                             "teacher: own document", "teacher: other document"]
    for name, mode in (("none", "rag"), ("generated: own document", "hyper-combine"),
                       ("teacher: own document", "prag-combine")):
        assert combine[name] == {k: metrics[mode]["all"][k] for k in ("em", "contains", "n")}
    assert all("answer_nll" not in row for row in combine.values())
    assert combine["generated: other document"]["n"] == len(load_demo_questions("unseen"))
    model, tok = load_base_model(str(root / "tiny-model"))
    docs, qs = load_demo_corpus("train") + load_demo_corpus("unseen"), load_demo_questions("unseen")
    answerer = make_answerer(model, tok, docs, retriever="gold", top_k=1)
    unseen = {d.id: d for d in load_demo_corpus("unseen")}
    own = [unseen[i] for i in own_documents(qs, unseen)]
    assert check_prompts(tok, qs, own) == answerer.prompts_and_adapters(qs, "rag")[0]
    assert check_prompts(tok, qs) == answerer.prompts_and_adapters(qs, "vanilla")[0]
    table = (root / "out" / "table.md").read_text()
    assert "the document in the prompt" in table and "| generated: other document | " in table


def test_prag_loss_equals_the_teacher_lora_applied_directly(demo_run):
    """The prag row's answer loss is the store's own adapter applied to each question, to 1e-5."""
    result, root, teacher_dir = demo_run
    from hyperprag.core.models import load_base_model

    model, tok = load_base_model(str(root / "tiny-model"))
    store = AdapterStore.open(teacher_dir)
    qs = [q for q in load_demo_questions("unseen") if q.id.rsplit("-q", 1)[0] in store]
    prompts = [answer_prompt(tok, q.question) for q in qs]
    nll = answer_nll(model, tok, prompts, [answer_completion(q.answers[0]) for q in qs],
                     store.get_many([q.id.rsplit("-q", 1)[0] for q in qs]), store.spec)
    assert result["metrics"]["prag"]["all"]["answer_nll"] == pytest.approx(sum(nll) / len(nll), abs=1e-5)


def test_training_path_teaches_the_first_documents_and_exports_a_hypernetwork(tmp_path, capsys):
    """`hyperprag demo --train` (and any model without a shipped checkpoint) on a tiny Llama: teacher LoRAs
    for the first documents only, a Lightning fit, an exported hypernetwork that generates this model's
    shapes; a second run keeps the teacher LoRAs it has."""
    from hypernet.checkpoint import load_hypernet
    from hyperprag.pipeline import train_demo_hypernet

    model_dir = tmp_path / "tiny-model"
    model = make_tiny_llama()
    model.save_pretrained(model_dir)
    make_tiny_tokenizer().save_pretrained(model_dir)
    exported = train_demo_hypernet(str(model_dir), tmp_path / "out", limit=5)
    store = AdapterStore.open(tmp_path / "out" / "teacher")
    assert set(store.ids()) == {d.id for d in load_demo_corpus("train")[:5]}
    loaded = load_hypernet(exported)
    generated = loaded.generate(torch.randn(2, loaded.config.emb_dim))
    assert {m: tuple(a.shape) for m, a in generated.A.items()} == \
        {m: (2, layers, SPEC.rank, d_in) for m, (layers, d_in, _) in target_shapes(model, SPEC).items()}
    assert loaded.base_model == str(model_dir) and loaded.encoder.kind == "sentence"
    train_demo_hypernet(str(model_dir), tmp_path / "out", limit=5)
    assert "0 documents trained" in capsys.readouterr().out.split("teacher:")[-1]
