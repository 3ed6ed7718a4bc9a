"""The own-vs-other check: its rows are the answers under the adapters they name, the document-independent
row included (token-level networks' bias slots alone)."""

import pytest
import torch

from hypernet.token_model import shared_part
from hyperprag.core.data import Document, Passage, Question
from hyperprag.core.lora import LoraSpec, LoraWeights, target_shapes
from hyperprag.core.prompts import answer_completion
from hyperprag.core.store import AdapterStore
from inference.checks import check_prompts, shared_rank, specificity_check
from inference.generate import answer_nll

SPEC = LoraSpec(rank=4, alpha=32, target_modules=("down_proj",))
DOCS = {f"d{i}": Document(f"d{i}", f"Title {i}", f"Document {i} says the answer is word{i}.") for i in range(3)}
QUESTIONS = [Question(f"q{i}", f"What does document {i} say?", [f"word{i}"], passages=[Passage(d.title, d.text)])
             for i, d in enumerate(DOCS.values())]


class FixedSource:
    """Rank-4 adapters: slots 0-1 the same for every document (the bias), slots 2-3 the document's own."""

    spec = SPEC

    def __init__(self, model):
        (n_layers, d_in, d_out), = target_shapes(model, SPEC).values()
        g = torch.Generator().manual_seed(0)
        bias_a, bias_b = torch.randn(n_layers, 2, d_in, generator=g), torch.randn(n_layers, d_out, 2, generator=g)
        self.adapters = {
            i: LoraWeights({"down_proj": torch.cat([bias_a, torch.randn(n_layers, 2, d_in, generator=g)], 1) * 0.1},
                           {"down_proj": torch.cat([bias_b, torch.randn(n_layers, d_out, 2, generator=g)], 2) * 0.1})
            for i in DOCS}

    def get_many(self, doc_ids):
        return [self.adapters[i] for i in doc_ids]


def test_document_independent_row_answers_under_the_bias_slots_alone(tiny_llama, tiny_tokenizer):
    source = FixedSource(tiny_llama)
    rows = specificity_check(tiny_llama, tiny_tokenizer, QUESTIONS, DOCS, source, max_new_tokens=4, shared_rank=2)
    assert list(rows) == ["none", "own document", "other document", "document-independent part"]
    prompts = check_prompts(tiny_tokenizer, QUESTIONS)
    gold = [answer_completion(q.answers[0]) for q in QUESTIONS]
    shared = [shared_part(source.adapters[f"d{i}"], 2) for i in range(3)]
    torch.testing.assert_close(shared[0].B["down_proj"], shared[2].B["down_proj"])  # one adapter for all
    nll = answer_nll(tiny_llama, tiny_tokenizer, prompts, gold, shared, SPEC)
    assert rows["document-independent part"]["answer_nll"] == pytest.approx(sum(nll) / len(nll), abs=1e-5)
    own = answer_nll(tiny_llama, tiny_tokenizer, prompts, gold, source.get_many(list(DOCS)), SPEC)
    assert rows["own document"]["answer_nll"] == pytest.approx(sum(own) / len(own), abs=1e-5)
    assert rows["own document"]["answer_nll"] != pytest.approx(rows["document-independent part"]["answer_nll"])
    plain = specificity_check(tiny_llama, tiny_tokenizer, QUESTIONS, DOCS, source, max_new_tokens=4)
    assert list(plain) == ["none", "own document", "other document"]
    inside = specificity_check(tiny_llama, tiny_tokenizer, QUESTIONS, DOCS, source, max_new_tokens=4, shared_rank=2,
                               with_passage=True, skip=("none", "other document"))
    assert list(inside) == ["own document", "document-independent part"]
    assert set(inside["document-independent part"]) == {"em", "contains", "n"}


@pytest.mark.parametrize(("arch", "expected"), [("memory", 2), ("perceiver", 2), ("hyperlora", None)])
def test_shared_rank_is_read_off_a_token_level_store(arch, expected, tmp_path):
    store = AdapterStore.create(tmp_path / arch, "tiny", SPEC, settings={
        "source": "hypernet", "hypernet_config": {"arch": arch, "bias_rank": 2}})
    assert shared_rank(store) == expected
    assert shared_rank(AdapterStore.create(tmp_path / "teacher", "tiny", SPEC)) is None
