"""Document encoders: pooling is padding-side agnostic; the embedding cache encodes each document once."""

from __future__ import annotations

import pytest
import torch

from hypernet.config import EncoderSpec
from hypernet.encoders import (
    EmbeddingCache,
    LLMEncoder,
    build_encoder,
    encode_documents,
    encoder_dim,
    encoder_id,
    native_bf16,
    resolve_compute_dtype,
)

pytestmark = pytest.mark.usefixtures("one_thread")


TEXTS = ["Mount Fennick is a dormant volcano.", "Orvel is a cheese.", "The Pellham Bridge opened in 1937 over the Skell."]


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("layer", [-1, 1])
def test_llm_encoder_pooling_ignores_padding_side(tiny_llama, tiny_tokenizer, pooling, layer):
    import copy

    enc = LLMEncoder(tiny_llama, tiny_tokenizer, layer=layer, pooling=pooling)
    left = enc.encode(TEXTS)
    tok_right = copy.deepcopy(tiny_tokenizer)
    tok_right.padding_side = "right"
    right = LLMEncoder(tiny_llama, tok_right, layer=layer, pooling=pooling).encode(TEXTS)
    torch.testing.assert_close(left, right, atol=1e-4, rtol=1e-4)
    alone = torch.cat([enc.encode([t]) for t in TEXTS])  # no padding at all
    torch.testing.assert_close(left, alone, atol=1e-4, rtol=1e-4)
    assert left.shape == (3, 64) and enc.dim == 64
    # the reference computation, unbatched: hidden state of that layer, pooled by hand
    ids = tiny_tokenizer(TEXTS[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hs = tiny_llama(ids, output_hidden_states=True).hidden_states[layer][0]  # [t, h]
    ref = hs.mean(0) if pooling == "mean" else hs[-1]
    torch.testing.assert_close(left[1], ref, atol=1e-4, rtol=1e-4)
    assert (left[0] - left[1]).abs().max() > 1e-3  # different documents, different vectors


def test_compute_dtype_is_validated_resolved_and_named_in_the_id(tiny_llama, tiny_tokenizer):
    with pytest.raises(ValueError, match="compute_dtype 'half'"):
        EncoderSpec(kind="tokens", compute_dtype="half")
    assert resolve_compute_dtype("auto", "cpu") == ("bfloat16" if native_bf16("cpu") else "float32")
    assert resolve_compute_dtype("float32") == "float32"
    plain = encoder_id(EncoderSpec(kind="llm"), "m")
    assert encoder_id(EncoderSpec(kind="llm", compute_dtype="bfloat16"), "m") == plain + ":bfloat16"
    enc = build_encoder(EncoderSpec(kind="llm", compute_dtype="bfloat16"), tiny_llama, tiny_tokenizer)
    ref = LLMEncoder(tiny_llama, tiny_tokenizer).encode(TEXTS)
    got = enc.encode(TEXTS)  # a separate cache entry, and close to float32's vectors
    assert enc.id.endswith(":bfloat16") and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=5e-2, rtol=5e-2)
    assert not torch.equal(got, ref)


def test_encode_documents_keeps_input_order(tiny_llama, tiny_tokenizer):
    enc = LLMEncoder(tiny_llama, tiny_tokenizer, pooling="last")
    batched = encode_documents(enc, TEXTS * 2, batch_size=4)  # length-sorted internally
    torch.testing.assert_close(batched, torch.cat([enc.encode([t]) for t in TEXTS * 2]), atol=1e-4, rtol=1e-4)


class CountingEncoder:
    id, dim = "count:v1", 3

    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        self.calls += len(texts)
        return torch.tensor([[len(t), t.count("e"), 1.0] for t in texts])


def test_embedding_cache_encodes_each_document_once(tmp_path):
    cache, enc = EmbeddingCache(tmp_path), CountingEncoder()
    first = cache.get_or_compute(enc, ["h1", "h2"], TEXTS[:2])
    assert enc.calls == 2 and cache.path(enc.id).exists()
    again = cache.get_or_compute(enc, ["h2", "h3", "h1"], [TEXTS[1], TEXTS[2], TEXTS[0]])
    assert enc.calls == 3  # only h3 was new
    torch.testing.assert_close(cache.lookup(enc.id, ["h3", "h1"]), again[[1, 2]])
    assert cache.lookup(enc.id, ["h1", "h4"]) is None  # a miss: the caller must load the encoder
    torch.testing.assert_close(again[[2, 0]], first)
    other = CountingEncoder()
    other.id = "count:v2"  # another encoder id never reuses these vectors
    cache.get_or_compute(other, ["h1"], TEXTS[:1])
    assert other.calls == 1 and len(list(tmp_path.glob("*.safetensors"))) == 2


def test_llm_encoder_spec_and_dims(tiny_llama, tiny_tokenizer):
    enc = build_encoder(EncoderSpec(kind="llm", layer=-1, pooling="last"), tiny_llama, tiny_tokenizer)
    assert enc.id == "llm:tiny-llama:layer-1:last:512" == encoder_id(EncoderSpec("llm", -1, "last"), "tiny-llama")
    assert encoder_dim(EncoderSpec(kind="llm"), tiny_llama.config) == 64
    assert encoder_dim(EncoderSpec(kind="sentence")) == 384
    with pytest.raises(ValueError, match="needs the base model"):
        build_encoder(EncoderSpec(kind="llm"))
    with pytest.raises(ValueError, match="pooling"):
        EncoderSpec(pooling="max")


@pytest.mark.slow
def test_sentence_encoder_is_minilm():
    enc = build_encoder(EncoderSpec(kind="sentence"))
    emb = encode_documents(enc, TEXTS, batch_size=2)
    assert emb.shape == (3, 384) and enc.id == "sentence:all-MiniLM-L6-v2"
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), atol=1e-4, rtol=0)
