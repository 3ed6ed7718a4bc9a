"""HyperPRAG (the Python API) on a tiny Llama saved to a folder, with a freshly initialized hypernetwork."""

import copy
import json

import pytest
import torch
from peft import PeftModel

from hypernet.checkpoint import load_hypernet, save_hypernet
from hypernet.config import EncoderSpec, HyperNetConfig
from hypernet.encoders import LLMEncoder
from hypernet.model import build_hypernet
from hyperprag import HyperPRAG
from hyperprag.api import as_document
from hyperprag.core.compose import compose
from hyperprag.core.data import Document
from hyperprag.core.lora import LoraSpec, apply_lora, target_shapes
from hyperprag.core.metrics import extract_answer
from hyperprag.core.prompts import answer_prompt
from hyperprag.core.store import AdapterStore
from inference.generate import generate
from tests.conftest import make_tiny_llama, make_tiny_tokenizer

SPEC = LoraSpec(rank=2, alpha=32)
ENCODER = EncoderSpec(kind="llm", layer=-1, pooling="mean", max_length=128)
DOCS = [Document("kell", "Kellford", "Kellford is a harbour town on the Drenn river, founded in 1841."),
        Document("zor", "Zorvath", "Zorvath was a glassblower who painted crimson lanterns for the opera."),
        Document("quib", "Quibley Moth", "The Quibley moth eats clover seeds on the Skarn plateau in May.")]
QUESTIONS = ["When was Kellford on the Drenn river founded?", "What did the glassblower Zorvath paint?",
             "What does the Quibley moth eat on the Skarn plateau?"]
MAX_NEW = 6


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny Llama + tokenizer saved as a model folder, and a fresh HyperLoRA checkpoint made for it."""
    root = tmp_path_factory.mktemp("api")
    model_dir, hyper_dir = root / "tiny-model", root / "hypernet"
    model = make_tiny_llama()
    model.save_pretrained(model_dir)
    make_tiny_tokenizer().save_pretrained(model_dir)
    # b_scale large enough that generated adapters visibly change what the tiny model generates
    config = HyperNetConfig(emb_dim=model.config.hidden_size, hidden=32, basis=8, b_scale=0.05, b_init=1.0)
    shapes = target_shapes(model, SPEC)
    torch.manual_seed(0)
    save_hypernet(hyper_dir, build_hypernet(config, shapes, SPEC), config, SPEC, str(model_dir), ENCODER, shapes)
    return model_dir, hyper_dir


@pytest.fixture(scope="module")
def hp(folders):
    model_dir, hyper_dir = folders
    return HyperPRAG.load(str(model_dir), hypernet=hyper_dir, max_new_tokens=MAX_NEW)


def _generate(hp, prompt, adapter=None):
    return generate(hp.model, hp.tokenizer, [prompt], None if adapter is None else [adapter],
                    None if adapter is None else SPEC, max_new_tokens=MAX_NEW)[0]


def test_parameterize_equals_direct_hypernetwork_output(hp, folders):
    adapters = hp.parameterize(DOCS + [DOCS[0]])  # a repeated document gets one adapter
    assert list(adapters) == [d.id for d in DOCS]
    hyper = load_hypernet(folders[1])
    encoder = LLMEncoder(hp.model, hp.tokenizer, ENCODER.layer, ENCODER.pooling, ENCODER.max_length)
    direct = hyper.generate(encoder.encode([d.full_text for d in DOCS]))  # [3, ...]
    for i, d in enumerate(DOCS):
        for m in SPEC.target_modules:
            assert adapters[d.id].A[m].shape == direct.A[m][i].shape
            torch.testing.assert_close(adapters[d.id].A[m], direct.A[m][i], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(adapters[d.id].B[m], direct.B[m][i], atol=1e-5, rtol=1e-5)
    # string documents get their content hash as id: the same text, the same id and adapter
    text_ids = list(hp.parameterize([DOCS[1].text]))
    assert text_ids == [as_document(DOCS[1].text).id] == list(hp.parameterize([DOCS[1].text]))


def test_answer_vanilla_rag_hyper_equal_direct_generation(hp):
    adapters = hp.parameterize(DOCS)
    vanilla = hp.answer(QUESTIONS, mode="vanilla")
    rag = hp.answer(QUESTIONS, documents=DOCS, mode="rag", top_k=1)
    hyper = hp.answer(QUESTIONS, documents=DOCS, mode="hyper", top_k=1)
    assert hp.answerer(DOCS, top_k=1).documents_for([_q(q) for q in QUESTIONS]) == [[d.id] for d in DOCS]
    changed = 0
    for q, d, v, r, h in zip(QUESTIONS, DOCS, vanilla, rag, hyper, strict=True):
        closed = answer_prompt(hp.tokenizer, q)
        assert v == extract_answer(_generate(hp, closed))
        assert r == extract_answer(_generate(hp, answer_prompt(hp.tokenizer, q, [(d.title, d.text)])))
        with_adapter = _generate(hp, closed, adapters[d.id])
        assert h == extract_answer(with_adapter)
        changed += with_adapter != _generate(hp, closed)
    assert changed >= 2  # the generated adapters do change the output: the equality above has teeth


def test_hyper_top2_composes_adapters_and_hyper_combine_runs(hp):
    adapters = hp.parameterize(DOCS)
    answerer = hp.answerer(DOCS, top_k=2)
    ids = answerer.documents_for([_q(QUESTIONS[0])])[0]
    got = hp.answer(QUESTIONS[:1], documents=DOCS, mode="hyper", top_k=2)[0]
    composed = compose([adapters[i] for i in ids], "cat")
    assert got == extract_answer(_generate(hp, answer_prompt(hp.tokenizer, QUESTIONS[0]), composed))
    assert len(hp.answer(QUESTIONS, documents=DOCS, mode="hyper-combine", top_k=2)) == 3


def test_export_peft_loads_with_peft_and_matches_apply_lora(hp, tmp_path):
    adapter = hp.parameterize(DOCS[:1])[DOCS[0].id]
    folder = hp.export_peft(DOCS[0].id, tmp_path / "peft")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["r"] == SPEC.rank and cfg["base_model_name_or_path"] == hp.model.config.name_or_path
    peft_model = PeftModel.from_pretrained(copy.deepcopy(hp.model), folder).eval()
    ids = hp.tokenizer([answer_prompt(hp.tokenizer, QUESTIONS[0])], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        got = peft_model(input_ids=ids).logits
        with apply_lora(hp.model, SPEC, adapter):
            want = hp.model(input_ids=ids).logits
        plain = hp.model(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (want - plain).abs().max() > 1e-3  # the adapter is not a no-op
    # a LoraWeights (e.g. a composed adapter) exports too
    composed = compose([adapter, hp.parameterize(DOCS[1:2])[DOCS[1].id]], "cat")
    assert json.loads((hp.export_peft(composed, tmp_path / "c") / "adapter_config.json").read_text())["r"] == 4


def test_stores_teacher_for_prag_and_generated_for_hyper(folders, tmp_path):
    model_dir, hyper_dir = folders
    hp = HyperPRAG.load(str(model_dir), hypernet=hyper_dir, max_new_tokens=MAX_NEW)
    made = hp.parameterize(DOCS)
    with AdapterStore.create(tmp_path / "teacher", str(model_dir), SPEC, {"teacher": {}}) as st:
        for d in DOCS:  # stand-in teacher adapters: the generated ones with B doubled
            w = made[d.id]
            st.put(d.id, type(w)(dict(w.A), {m: 2 * b for m, b in w.B.items()}))
    from inference.parameterize import parameterize_corpus

    parameterize_corpus(hyper_dir, DOCS, tmp_path / "gen", hp.model, hp.tokenizer, progress=False)

    prag = HyperPRAG.load(str(model_dir), store=tmp_path / "teacher", max_new_tokens=MAX_NEW)
    got = prag.answer(QUESTIONS, documents=DOCS, mode="prag", top_k=1)
    for q, d, g in zip(QUESTIONS, DOCS, got, strict=True):
        assert g == extract_answer(_generate(prag, answer_prompt(prag.tokenizer, q), prag.teacher.get(d.id)))
    with pytest.raises(ValueError, match="needs a hypernetwork"):
        prag.parameterize(DOCS)

    on_the_fly = hp.answer(QUESTIONS, documents=DOCS, mode="hyper", top_k=1)
    gen = HyperPRAG.load(str(model_dir), store=tmp_path / "gen", max_new_tokens=MAX_NEW)  # no hypernetwork
    assert gen.teacher is None and gen.answer(QUESTIONS, documents=DOCS, mode="hyper", top_k=1) == on_the_fly
    as_hypernet = HyperPRAG.load(str(model_dir), hypernet=tmp_path / "gen", max_new_tokens=MAX_NEW)  # as the CLI
    assert as_hypernet.answer(QUESTIONS, documents=DOCS, mode="hyper", top_k=1) == on_the_fly


def test_parameterize_corpus_in_bf16_records_it_and_stays_close(hp, folders, tmp_path):
    from inference.parameterize import parameterize_corpus

    _, hyper_dir = folders
    runs = {}
    for dtype in ("float32", "bfloat16"):
        parameterize_corpus(hyper_dir, DOCS, tmp_path / dtype, hp.model, hp.tokenizer, progress=False,
                            compute_dtype=dtype)
        st = AdapterStore.open(tmp_path / dtype)
        assert st.settings["encoder"]["compute_dtype"] == dtype
        runs[dtype] = [st.get(d.id) for d in DOCS]
    for full, half in zip(runs["float32"], runs["bfloat16"], strict=True):
        for m in full.A:
            delta = full.B[m] @ full.A[m]  # [L, out, in]
            err = (delta - half.B[m] @ half.A[m]).norm() / delta.norm()
            assert 0 < float(err) < 5e-2


def test_clear_errors(hp, folders):
    with pytest.raises(ValueError, match="needs documents"):
        HyperPRAG.load(str(folders[0]), hypernet=folders[1]).answer(["Who?"], mode="rag")
    with pytest.raises(ValueError, match="unknown mode"):
        hp.answer(["Who?"], mode="closed")
    with pytest.raises(TypeError, match="list of questions"):
        hp.answer("Who?")
    with pytest.raises(KeyError, match="parameterize it first"):
        hp.export_peft("no-such-doc", "/tmp/never-written")


def _q(text):
    from hyperprag.api import as_question

    return as_question(text, 0)
