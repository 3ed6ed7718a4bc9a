"""Batched greedy generation and answer scoring, each prompt optionally with its own LoRA adapter.

A batch mixes prompts with different adapters (or none): their matrices are stacked, zero-padded to one
rank, and applied per example through forward hooks inside a single `model.generate` loop. A batch that
shares one adapter goes through the same hooks, or is merged into the weights when that is cheaper:
merging costs a fixed rewrite of every target weight (on a 2-core CPU 0.15-0.45 s for SmolLM2-135M, and
~300 MB of fresh memory), then nothing per token; hooks cost ~6 ms per forward call there, so merging
pays off only past ~50 decode steps (benchmarks/serving.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import StoppingCriteria, StoppingCriteriaList

from hyperprag.core.lm import IGNORE, per_row_nll, target_logits
from hyperprag.core.lora import LoraSpec, LoraWeights, apply_lora, merged_lora
from hyperprag.core.metrics import answer_is_final

AdapterArg = LoraWeights | Sequence[LoraWeights | None] | None
MERGE_MIN_FORWARDS = 64
"""On CPU a shared adapter is merged only when at least this many forward calls will use it."""


def _zeros_like_adapter(ref: LoraWeights) -> LoraWeights:
    return LoraWeights({m: torch.zeros_like(a) for m, a in ref.A.items()},
                       {m: torch.zeros_like(b) for m, b in ref.B.items()})


def batch_adapters(adapters: Sequence[LoraWeights | None]) -> LoraWeights | None:
    """Stack per-prompt adapters into one batched set; None entries become zero adapters."""
    present = [a for a in adapters if a is not None]
    if not present:
        return None
    if all(a is present[0] for a in adapters):
        return present[0]  # one shared adapter
    zero = _zeros_like_adapter(present[0])
    return LoraWeights.stack([a if a is not None else zero for a in adapters])


def use_merged(model, weights: LoraWeights | None, forwards: int, merge: bool | None = None) -> bool:
    """Whether a shared adapter should be merged into the weights (`merge` None = decide by cost)."""
    if weights is None or weights.batched:
        return False
    if merge is not None:
        return merge
    # Off the CPU a merge is one fast kernel per module; on the CPU it allocates and writes every target
    # weight, which pays off only over many decode steps.
    return next(model.parameters()).device.type != "cpu" or forwards >= MERGE_MIN_FORWARDS


def _adapter_context(model, spec: LoraSpec, weights: LoraWeights | None, forwards: int = 1,
                     merge: bool | None = None):
    if use_merged(model, weights, forwards, merge):
        return merged_lora(model, spec, weights)
    return apply_lora(model, spec, weights)


def _check_adapters(prompts: Sequence[str], adapters: AdapterArg, spec: LoraSpec | None) -> None:
    if isinstance(adapters, Sequence):
        if len(adapters) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(adapters)} adapters")
        if spec is None and any(a is not None for a in adapters):
            raise ValueError("generating with adapters needs their LoraSpec")
    elif adapters is not None and spec is None:
        raise ValueError("generating with adapters needs their LoraSpec")


def _slice(adapters: AdapterArg, start: int, end: int) -> LoraWeights | None:
    if adapters is None or isinstance(adapters, LoraWeights):
        return adapters
    return batch_adapters(adapters[start:end])


class AnswerComplete(StoppingCriteria):
    """Stops each sequence once its short answer is final (`answer_is_final` on the new text)."""

    def __init__(self, tokenizer, prompt_width: int):
        self.tokenizer, self.prompt_width = tokenizer, prompt_width

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:  # [b] bool
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([answer_is_final(t) for t in texts], device=input_ids.device)


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str], adapters: AdapterArg = None, spec: LoraSpec | None = None,
             max_new_tokens: int = 20, batch_size: int = 8, merge: bool | None = None,
             stop_at_answer: bool = False) -> list[str]:
    """Greedy continuations of `prompts` (left-padded batches), with a shared or per-prompt adapter.

    `merge`: True merges a batch's shared adapter into the weights, False uses hooks, None decides by cost.
    `stop_at_answer`: end each continuation as soon as `extract_answer` of it can no longer change (about
    half the decode steps for short answers; the extracted answers are the same as without it).
    """
    _check_adapters(prompts, adapters, spec)
    outputs: list[str] = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        weights = _slice(adapters, start, start + len(chunk))
        stops = StoppingCriteriaList([AnswerComplete(tokenizer, enc["input_ids"].shape[1])] if stop_at_answer else [])
        with _adapter_context(model, spec, weights, max_new_tokens, merge):
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
                                 stopping_criteria=stops)
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return outputs


@torch.inference_mode()
def answer_nll(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], adapters: AdapterArg = None,
               spec: LoraSpec | None = None, batch_size: int = 8) -> list[float]:
    """Mean negative log-likelihood per completion token given each prompt (teacher forcing).

    This is the gold-answer loss: far more sensitive than exact match to whether an adapter carries a
    document's facts on a small model. Prompts are tokenized as `generate` tokenizes them (without special
    tokens: a prompt carries its own BOS, hyperprag/core/prompts.py), left-padded like generation.
    """
    _check_adapters(prompts, adapters, spec)
    results: list[float] = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[start:start + batch_size]]
        c_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions[start:start + batch_size]]
        seqs = [p + c for p, c in zip(p_ids, c_ids, strict=True)]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        for i, (s, c) in enumerate(zip(seqs, c_ids, strict=True)):  # left padding, like generation
            input_ids[i, width - len(s):] = torch.tensor(s)
            attn[i, width - len(s):] = 1
            labels[i, width - len(c):] = torch.tensor(c)
        with _adapter_context(model, spec, _slice(adapters, start, start + len(seqs))):
            logits, targets, rows = target_logits(model, input_ids.to(device), labels.to(device), attn.to(device))
        results.extend(per_row_nll(logits, targets, rows, len(seqs)).tolist())
    return results


@torch.no_grad()
def option_nll(model, tokenizer, prompt: str, completions: Sequence[str], adapter: LoraWeights | None = None,
               spec: LoraSpec | None = None) -> list[float]:
    """Mean negative log-likelihood per token of each of a question's option `completions` after its prompt.

    The multiple-choice scoring of lm-evaluation-harness (length-normalized log-likelihood, lowest NLL
    wins). The options are one right-padded batch with one adapter: they share the whole prompt, which the
    decoder runs once (hyperprag/core/lm.py's shared prefix) and each option only its own tokens.
    """
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    if not c_ids or any(not c for c in c_ids):
        raise ValueError(f"option completions must be non-empty texts, got {list(completions)!r}")
    width = len(p_ids) + max(len(c) for c in c_ids)
    input_ids = torch.full((len(c_ids), width), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE)
    for i, c in enumerate(c_ids):
        n = len(p_ids) + len(c)
        input_ids[i, :n] = torch.tensor(p_ids + c)
        attn[i, :n] = 1
        labels[i, len(p_ids):n] = torch.tensor(c)
    device = next(model.parameters()).device
    # handing the adapter itself (even None) makes every row one group: the prompt runs once
    logits, targets, rows = target_logits(model, input_ids.to(device), labels.to(device), attn.to(device),
                                          adapter=(spec, adapter))
    return per_row_nll(logits, targets, rows, len(c_ids)).tolist()
