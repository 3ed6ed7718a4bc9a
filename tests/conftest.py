"""Shared test fixtures: tiny random Llama / Gemma3 models and an offline byte-level tokenizer.

The models are session-scoped, fp32, eval mode, requires_grad False and seeded, so every test sees the
same weights. Do not modify them in place (PeftModel.from_pretrained, load_state_dict, training): take
`copy.deepcopy(tiny_llama)` or call `make_tiny_llama()` / `make_tiny_gemma()` for a private copy.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_VOCAB = 260  # 4 special tokens + 256 byte tokens, see make_tiny_tokenizer
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def make_tiny_tokenizer():
    """A byte-level tokenizer (one token per UTF-8 byte, no merges) with a chat template; fully offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    assert len(vocab) == TINY_VOCAB
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>", chat_template=CHAT_TEMPLATE)
    tokenizer.padding_side = "left"  # as load_base_model sets it
    return tokenizer


def make_bos_tokenizer():
    """The tiny tokenizer as Gemma-3 base behaves: no chat template, and a BOS the tokenizer adds itself."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = make_tiny_tokenizer()
    tokenizer.chat_template = None
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tokenizer


def _finish(model, name: str):
    model.eval()
    model.requires_grad_(False)
    model.config.name_or_path = name
    model.name_or_path_hyperprag = name  # what hyperprag.core.models.model_id reports
    return model


def make_tiny_llama(seed: int = 0):
    """A random LlamaForCausalLM: hidden 64, intermediate 128, 2 layers, 4 heads, vocab 260, fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return _finish(LlamaForCausalLM(config).float(), "tiny-llama")


def make_tiny_gemma(seed: int = 0):
    """A random Gemma3ForCausalLM (text only): hidden 64, intermediate 128, 2 layers, 4 heads, vocab 260."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                              max_position_embeddings=2048, sliding_window=64,
                              layer_types=["sliding_attention", "full_attention"],
                              pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    return _finish(Gemma3ForCausalLM(config).float(), "tiny-gemma3")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama():
    """Shared read-only tiny Llama; deepcopy it before anything that changes it."""
    return make_tiny_llama()


@pytest.fixture(scope="session")
def tiny_gemma():
    """Shared read-only tiny Gemma3; deepcopy it before anything that changes it."""
    return make_tiny_gemma()


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread avoids oversubscription on a shared 2-core machine (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def float64_norms(monkeypatch):
    """Llama's and Gemma3's RMS norms in the input's own precision: transformers runs them in float32 even in
    a float64 model, which hides exactness behind float32 rounding once sums are taken in another order."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    def llama(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def gemma(self, x):
        return self._norm(x) * (1.0 + self.weight)

    monkeypatch.setattr(LlamaRMSNorm, "forward", llama)
    monkeypatch.setattr(Gemma3RMSNorm, "forward", gemma)
