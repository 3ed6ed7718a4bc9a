"""Token-level hypernetworks: the per-layer token-state encoders (residual stream; down_proj inputs and
next-token embeddings), PerceiverLoRA / OuterLoRA / MemoryLoRA shapes, masking, their zero start, gradient
flow, and tiny ones that learn to separate two documents."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from hypernet.config import HyperNetConfig
from hypernet.encoders import DocStates, TokenStateEncoder, encode_documents
from hypernet.losses import lm_loss, select_logits, target_mask
from hypernet.model import build_hypernet, count_parameters, parameter_table
from hypernet.token_model import OuterLoRA, PerceiverLoRA, generated_part, shared_part
from hyperprag.core.lora import LoraSpec, apply_lora, target_shapes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hyper_synth import randomize_b  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["Lake Vorn lies near Tesmar.", "The Kell bridge was built by Ilsa Brandt in the year 1832, of oak."]


ARCHS = ["perceiver", "outer", "memory"]


def _config(arch="perceiver", **kw) -> HyperNetConfig:
    emb_dim = 128 if arch == "memory" else 64  # memory reads down_proj inputs (the tiny models' intermediate)
    return HyperNetConfig(arch=arch, emb_dim=emb_dim, latent_dim=32, heads=4, blocks=2, bias_rank=2, basis=16, **kw)


def _spec(arch: str, rank: int) -> LoraSpec:
    return LoraSpec(rank=rank, target_modules=("down_proj",)) if arch == "memory" else LoraSpec(rank=rank)


def _states(model, tok, texts=TEXTS, layers=None, arch="perceiver") -> DocStates:
    enc = TokenStateEncoder(model, tok, layers=layers, token_states="memory" if arch == "memory" else "residual")
    return enc.encode(texts)


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
def test_token_states_are_the_layer_inputs_and_padding_free(model_name, request, tiny_tokenizer):
    model = request.getfixturevalue(model_name)
    docs = _states(model, tiny_tokenizer)
    n_tok = [len(tiny_tokenizer(t)["input_ids"]) for t in TEXTS]
    assert docs.states.shape == (2, 2, max(n_tok), 64) and docs.mask.sum(-1).tolist() == n_tok
    for i, text in enumerate(TEXTS):  # a document alone = the same document in a right-padded batch
        ids = torch.tensor([tiny_tokenizer(text)["input_ids"]])
        with torch.no_grad():
            hidden = model.get_decoder()(input_ids=ids, output_hidden_states=True).hidden_states
        for pos, layer in enumerate((0, 1)):  # entry l = the input of layer l
            torch.testing.assert_close(docs.states[i, pos, : n_tok[i]], hidden[layer][0], atol=1e-5, rtol=1e-5)
    one = _states(model, tiny_tokenizer, layers=(1,))
    torch.testing.assert_close(one.states[:, 0], docs.states[:, 1])


def test_encode_documents_restores_order_across_batches(tiny_llama, tiny_tokenizer):
    enc = TokenStateEncoder(tiny_llama, tiny_tokenizer)
    texts = [TEXTS[1], TEXTS[0], TEXTS[1] + " More.", TEXTS[0]]
    together = encode_documents(enc, texts, batch_size=2)  # sorted by length, then put back in order
    for i, text in enumerate(texts):
        alone = enc.encode([text])
        n = int(alone.mask.sum())
        assert int(together.mask[i].sum()) == n
        torch.testing.assert_close(together.states[i, :, :n], alone.states[0, :, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("token_states", ["residual", "memory"])
def test_bf16_base_pass_stays_close_to_float32(tiny_llama, tiny_tokenizer, token_states):
    full = TokenStateEncoder(tiny_llama, tiny_tokenizer, token_states=token_states)
    half = TokenStateEncoder(tiny_llama, tiny_tokenizer, token_states=token_states, compute_dtype="bfloat16")
    a, b = full.encode(TEXTS), half.encode(TEXTS)
    assert b.states.dtype == torch.float32 and torch.equal(a.mask, b.mask)  # handed on in float32, same tokens
    real = a.mask.bool()[:, None, :, None].expand_as(a.states)
    rel = (a.states - b.states)[real].norm() / a.states[real].norm()
    assert 1e-5 < float(rel) < 3e-2  # bf16 really ran (not float32 again) and rounds only its last bits
    assert half.id == full.id + ":bfloat16" and tiny_llama.dtype == torch.float32  # the model is untouched


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
def test_memory_states_are_down_proj_inputs_and_next_tokens(model_name, request, tiny_tokenizer):
    model = request.getfixturevalue(model_name)
    docs = _states(model, tiny_tokenizer, arch="memory")
    n_tok = [len(tiny_tokenizer(t)["input_ids"]) for t in TEXTS]
    assert docs.states.shape == (2, 2, max(n_tok), 128) and docs.mask.sum(-1).tolist() == [n - 1 for n in n_tok]
    ids = torch.tensor([tiny_tokenizer(TEXTS[1])["input_ids"]])
    seen = []
    hook = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
    with torch.no_grad():
        model(ids)
    hook.remove()
    torch.testing.assert_close(docs.states[1, 1], seen[0][0], atol=1e-5, rtol=1e-5)
    emb = model.get_input_embeddings()(ids)[0]
    torch.testing.assert_close(docs.values[1, : n_tok[1] - 1], emb[1:])  # position t holds token t+1


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_gemma"])
def test_shapes_rank_and_zero_start(arch, model_name, request, tiny_tokenizer):
    model = request.getfixturevalue(model_name)
    spec = _spec(arch, 6)
    net = build_hypernet(_config(arch), target_shapes(model, spec), spec)
    docs = _states(model, tiny_tokenizer, arch=arch)
    out = net(docs)
    for m, (n_layers, d_in, d_out) in target_shapes(model, spec).items():
        assert out.A[m].shape == (2, n_layers, 6, d_in) and out.B[m].shape == (2, n_layers, d_out, 6)
        assert torch.count_nonzero(out.B[m]) == 0  # bias B and generated B gain start at zero
    assert generated_part(out, 2).rank == 4 and out.meta["bias_rank"] == 2
    ids = torch.randint(4, 260, (2, 9))
    with torch.no_grad():
        plain = model(ids).logits
        with apply_lora(model, spec, out):
            adapted = model(ids).logits
    torch.testing.assert_close(adapted, plain)  # training starts from the plain model


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_part_is_the_same_for_every_document_and_completes_the_generated_part(arch, tiny_llama,
                                                                                    tiny_tokenizer):
    """With every gain and the bias set off zero: the shared part of two documents' adapters is identical, it
    keeps the adapter's rank, and shared + generated slots give the whole adapter's update."""
    spec = _spec(arch, 6)
    net = build_hypernet(_config(arch), target_shapes(tiny_llama, spec), spec)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = net(_states(tiny_llama, tiny_tokenizer, arch=arch))
    shared = shared_part(out, 2)
    assert shared.rank == out.rank == 6
    for m in out.A:
        assert not torch.equal(out.delta(m, 0, 1.0)[0], out.delta(m, 0, 1.0)[1])  # the documents' adapters differ
        torch.testing.assert_close(shared.A[m][0], shared.A[m][1])
        torch.testing.assert_close(shared.B[m][0], shared.B[m][1])
        assert torch.count_nonzero(shared.B[m][..., 2:]) == 0
        for layer in range(out.A[m].shape[1]):
            parts = shared.delta(m, layer, 1.0) + generated_part(out, 2).delta(m, layer, 1.0)
            torch.testing.assert_close(parts, out.delta(m, layer, 1.0), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_ignores_padding(arch, tiny_llama, tiny_tokenizer):
    spec = _spec(arch, 4)
    net = build_hypernet(_config(arch), target_shapes(tiny_llama, spec), spec)
    randomize_b(net)
    both = net(_states(tiny_llama, tiny_tokenizer, arch=arch))
    alone = net(_states(tiny_llama, tiny_tokenizer, texts=TEXTS[:1], arch=arch))
    for m in both.A:
        torch.testing.assert_close(both.A[m][0], alone.A[m][0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(both.B[m][0], alone.B[m][0], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(both.A[m][0], both.A[m][1])  # different documents, different adapters


def _qa_batch(tok, pairs):
    from training.sequences import SequenceOptions, TrainingText, collate, tokenize_text

    opts = SequenceOptions(kinds=("qa_closed",), max_length=128)
    examples = [tokenize_text(tok, TrainingText(d, "qa_closed", f" {a}.", q), opts)[0] for d, q, a in pairs]
    return collate(examples, tok.pad_token_id)


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch, tiny_llama, tiny_tokenizer):
    spec = _spec(arch, 4)
    net = build_hypernet(_config(arch), target_shapes(tiny_llama, spec), spec)
    randomize_b(net)  # at the zero start only B gets gradients; open it to reach the rest
    batch = _qa_batch(tiny_tokenizer, [(0, "Where is Lake Vorn?", "Tesmar"), (1, "Who built it?", "Ilsa")])
    weights = net(_states(tiny_llama, tiny_tokenizer, arch=arch))
    ans = target_mask(batch["labels"], batch["attention_mask"])
    logits = select_logits(tiny_llama, spec, weights.select(batch["doc_index"]), batch["input_ids"],
                           batch["attention_mask"], ans)
    lm_loss(logits, batch["labels"][:, 1:][ans]).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


@pytest.mark.parametrize("arch", ["perceiver", "memory"])
def test_tiny_network_learns_to_separate_two_documents(arch, tiny_tokenizer):
    """Two documents state different values for the same question; one network must give each document's
    adapter its own value: own-document answer loss far below the other document's."""
    from conftest import make_tiny_llama

    torch.manual_seed(0)
    model = make_tiny_llama(seed=3)
    model.lm_head.weight.data.mul_(30)  # random 0.02-std logits cannot get confident: let the model answer
    spec = LoraSpec(rank=4, target_modules=("down_proj",))
    net = build_hypernet(_config(arch, b_scale=0.1 if arch == "perceiver" else 1.0), target_shapes(model, spec), spec)
    docs = _states(model, tiny_tokenizer, texts=["The vault code is red.", "The vault code is blue."], arch=arch)
    q = "What is the vault code?"
    batch = _qa_batch(tiny_tokenizer, [(0, q, "red"), (1, q, "blue")])
    ans = target_mask(batch["labels"], batch["attention_mask"])
    targets = batch["labels"][:, 1:][ans]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def loss_with(index) -> torch.Tensor:
        w = net(docs).select(index)
        return lm_loss(select_logits(model, spec, w, batch["input_ids"], batch["attention_mask"], ans), targets)

    for _ in range(80):
        opt.zero_grad()
        loss_with(batch["doc_index"]).backward()
        opt.step()
    with torch.no_grad():
        own, other = float(loss_with(batch["doc_index"])), float(loss_with(1 - batch["doc_index"]))
    assert own < 0.05 and other > own + 2.0, (own, other)


def test_outer_product_arm_is_small_and_perceiver_under_a_third_of_dyprag():
    rows = {(r["base"], r["arch"], r["emb_dim"]): r["params"] for r in parameter_table()}
    for base, hidden, inner in (("SmolLM2-135M", 576, 1536), ("Llama-3.2-1B", 2048, 8192)):
        assert rows[(base, "perceiver", hidden)] < rows[(base, "dyprag", hidden)] / 3
        assert rows[(base, "outer", hidden)] < rows[(base, "perceiver", hidden)]
        assert rows[(base, "memory", inner)] < rows[(base, "perceiver", hidden)]


def test_perceiver_state_dict_round_trip(tiny_llama, tiny_tokenizer):
    spec = LoraSpec(rank=4)
    net = PerceiverLoRA(_config(), target_shapes(tiny_llama, spec), spec)
    randomize_b(net)
    copy_ = PerceiverLoRA(_config(), target_shapes(tiny_llama, spec), spec)
    copy_.load_state_dict(copy.deepcopy(net.state_dict()))
    docs = _states(tiny_llama, tiny_tokenizer)
    a, b = net(docs), copy_(docs)
    for m in a.A:
        torch.testing.assert_close(a.A[m], b.A[m])
        torch.testing.assert_close(a.B[m], b.B[m])
    assert count_parameters(net) == count_parameters(copy_)
    assert isinstance(OuterLoRA(_config("outer"), target_shapes(tiny_llama, spec), spec), OuterLoRA)


def test_generated_rank_goes_through_store_and_peft(tiny_llama, tiny_tokenizer, tmp_path):
    """A rank-6 generated adapter (2 bias + 4 document slots) is stored, read back and exported as a PEFT
    folder that PEFT applies with the same logits as our hooks."""
    from peft import PeftModel

    from hyperprag.core.peft_io import export_peft
    from hyperprag.core.store import AdapterStore

    spec = LoraSpec(rank=6)
    net = build_hypernet(_config(), target_shapes(tiny_llama, spec), spec)
    randomize_b(net, std=0.5)
    with torch.no_grad():
        weights = net(_states(tiny_llama, tiny_tokenizer)).select(1)
    store = AdapterStore.create(tmp_path / "store", "tiny-llama", spec, {})
    store.put("d1", weights)
    store.flush()
    back = AdapterStore.open(tmp_path / "store").get("d1")
    assert back.rank == 6
    ids = torch.randint(4, 260, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), apply_lora(tiny_llama, spec, back):
        ours = tiny_llama(ids).logits
    with torch.no_grad():
        assert (ours - tiny_llama(ids).logits).abs().max() > 1e-3
    folder = export_peft(back, spec, tmp_path / "peft", tiny_llama, "tiny")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(tiny_llama), str(folder)).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, ours, atol=1e-5, rtol=0)
