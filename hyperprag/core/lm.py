"""The language-model head where a loss is taken, and the loss of each target token: one implementation
for the teacher's training loss, the hypernetwork's KL and answer losses, and the gold-answer loss of
answering and evaluation.

The decoder runs once over the whole batch; the LM head (a [hidden, vocab] matmul, the most expensive
step for a small model with a large vocabulary) runs only at the positions that predict a target token,
with Gemma's final-logit softcap applied exactly as the model's own forward does.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperprag.core.lora import LoraSpec, LoraWeights, apply_lora

IGNORE = -100
"""Label of a position that carries no loss (torch cross_entropy's ignore_index)."""


def output_logits(model: nn.Module, hidden: Tensor) -> Tensor:
    """The model's LM head on selected hidden states [n, h] -> [n, V]: float32 for half-precision models
    (float64 stays float64, for exactness tests), with Gemma's final-logit softcap if the model has one."""
    logits = model.get_output_embeddings()(hidden)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


MIN_SHARED_PREFIX = 4
"""Shortest common token prefix worth computing once per adapter instead of once per row."""


def common_prefix_length(input_ids: Tensor, attention_mask: Tensor) -> int:
    """Tokens every row of a right-padded batch starts with, leaving each row at least one token of its own."""
    n = int(attention_mask.sum(-1).min()) - 1
    if n < 1 or not bool(attention_mask[:, :n].all()):
        return 0
    differs = (input_ids[:, :n] != input_ids[:1, :n]).any(0).nonzero()  # columns where some row differs
    return int(differs[0]) if len(differs) else n


BUCKET_OVERHEAD_TOKENS = 64
"""What one more decoder call costs, in padded tokens: the length buckets are chosen to minimize
rows x width + this per bucket."""


def length_buckets(lengths: Sequence[int], overhead: int = BUCKET_OVERHEAD_TOKENS) -> list[list[int]]:
    """Rows grouped by length so that padding each group to its own longest row costs least:
    minimizes sum(rows x width + overhead) over contiguous runs of the rows sorted by length (exact, O(b^2))."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best, cut = [0] + [None] * n, [0] * (n + 1)  # best[j]: cost of the j shortest rows; cut[j]: its last bucket start
    for j in range(1, n + 1):
        width = lengths[order[j - 1]]  # sorted ascending: the j-th row is the widest of any bucket ending at it
        best[j], cut[j] = min((best[i] + (j - i) * width + overhead, i) for i in range(j))
    buckets, j = [], n
    while j > 0:
        buckets.append(sorted(order[cut[j]:j]))
        j = cut[j]
    return buckets[::-1]


def _right_padded(attention_mask: Tensor, lengths: Tensor) -> bool:
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return bool(((positions < lengths[:, None]) == attention_mask.bool()).all())


def decoder_hidden(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
                   adapter: tuple[LoraSpec, LoraWeights | None] | None = None, groups: Tensor | None = None
                   ) -> Tensor:
    """Last hidden states [b, t, h] of the decoder, with `adapter` = (spec, weights) applied (gradients flow
    to the weights): weights shared by all rows, one per row, or with `groups` ([b]) one per group of rows.

    Rows that share an adapter (one group) and a common token prefix (the chat template before the
    question) compute that prefix once per adapter and attend to its cached keys and values: the full
    pass's numbers (to float rounding; tested), at a fraction of the cost when a document has several
    questions. Without `adapter` and `groups` nothing is shared: hooks the caller installed may hold one
    adapter per row. With an attention mask, position ids count real tokens only, so left- and
    right-padded batches give the same numbers (and the same positions as `generate`). Without one, the
    batch must have no padding before a real token (right-padded or none): causal attention then never
    lets a real token see padding, and the decoder takes its faster unmasked path.

    A right-padded batch of very different lengths (closed-book questions beside questions with a passage
    in the prompt) runs as length buckets (`length_buckets`), each cut to its own width: the same numbers
    without computing the padding. Positions past a row's length hold zeros then.
    """
    shared = adapter is not None or groups is not None  # else hooks the caller installed may differ per row
    if not shared or attention_mask is None or input_ids.shape[0] < 2:
        return _decoder_pass(model, input_ids, attention_mask, adapter, groups)
    row_lengths = attention_mask.sum(-1)  # [b]
    lengths = row_lengths.tolist()
    buckets = length_buckets(lengths)
    if len(buckets) == 1 or not _right_padded(attention_mask, row_lengths):
        return _decoder_pass(model, input_ids, attention_mask, adapter, groups)
    spec, weights = adapter if adapter is not None else (None, None)
    per_row = groups is None and weights is not None and weights.batched
    parts = []
    for rows in buckets:
        width, idx = max(lengths[i] for i in rows), torch.tensor(rows, device=input_ids.device)
        sub_adapter = (spec, weights.select(idx)) if per_row else adapter
        parts.append((idx, width, _decoder_pass(model, input_ids[idx, :width], attention_mask[idx, :width],
                                                sub_adapter, None if groups is None else groups[idx])))
    h = parts[0][2]
    out = h.new_zeros(input_ids.shape[0], input_ids.shape[1], h.shape[-1])  # [b, t, h]
    for idx, width, hidden in parts:
        out = out.index_put((idx[:, None], torch.arange(width, device=idx.device)[None]), hidden)
    return out


def _decoder_pass(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
                  adapter: tuple[LoraSpec, LoraWeights | None] | None = None, groups: Tensor | None = None
                  ) -> Tensor:
    """`decoder_hidden` in one decoder run over the batch as it is padded."""
    shared = adapter is not None or groups is not None  # else hooks the caller installed may differ per row
    spec, weights = adapter if adapter is not None else (None, None)
    per_row = weights.select(groups) if groups is not None and weights is not None else weights
    if shared and groups is None and (weights is None or not weights.batched):  # one adapter for all rows
        groups = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
    n_prefix = 0
    if groups is not None and attention_mask is not None:
        n_prefix = common_prefix_length(input_ids, attention_mask)
    decoder = model.get_decoder()
    kwargs = {}
    if attention_mask is not None:
        kwargs = {"attention_mask": attention_mask,
                  "position_ids": (attention_mask.long().cumsum(-1) - 1).clamp_min(0)}
    if n_prefix < MIN_SHARED_PREFIX:
        with apply_lora(model, spec, per_row):
            return decoder(input_ids=input_ids, use_cache=False, **kwargs).last_hidden_state
    used, row_group = torch.unique(groups, return_inverse=True)  # [g] groups present, [b] row -> group
    prefix = input_ids[:1, :n_prefix].expand(len(used), n_prefix)
    prefix_weights = weights.select(used) if weights is not None and weights.batched else weights
    with apply_lora(model, spec, prefix_weights):
        head = decoder(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True,
                       position_ids=kwargs["position_ids"][:1, :n_prefix].expand_as(prefix))
    cache = head.get("cache") or head.get("past_key_values")  # transformers 5 / 4 names
    cache.batch_select_indices(row_group)  # [g, ...] -> [b, ...]; gradients flow through the indexing
    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    with apply_lora(model, spec, per_row):
        tail = decoder(input_ids=input_ids[:, n_prefix:], attention_mask=attention_mask, use_cache=True,
                       position_ids=kwargs["position_ids"][:, n_prefix:], **{name: cache})
    return torch.cat([head.last_hidden_state[row_group], tail.last_hidden_state], dim=1)


def next_token_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, select: Tensor,
                      adapter: tuple[LoraSpec, LoraWeights | None] | None = None, groups: Tensor | None = None
                      ) -> Tensor:
    """Logits [n, V] predicting token t+1 at each position t where `select` ([b, t-1] bool) is set; the
    decoder as in `decoder_hidden` (adapters, shared prefixes, padding)."""
    hidden = decoder_hidden(model, input_ids, attention_mask, adapter, groups)  # [b, t, h]
    return output_logits(model, hidden[:, :-1][select])


def target_logits(model: nn.Module, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None,
                  adapter: tuple[LoraSpec, LoraWeights | None] | None = None, groups: Tensor | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """At every labelled position (labels != IGNORE): the logits that predict it [n, V] (row-major), its
    token [n] and its batch row [n]; adapters and shared prefixes as in `decoder_hidden`."""
    shifted = labels[:, 1:]
    select = shifted != IGNORE  # [b, t-1]: token t+1 is predicted at position t
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(select)[select]
    return next_token_logits(model, input_ids, attention_mask, select, adapter, groups), shifted[select], rows


def per_row_nll(logits: Tensor, targets: Tensor, rows: Tensor, num_rows: int) -> Tensor:
    """Mean token NLL of each of `num_rows` groups (sequences, documents): [num_rows] (nan where a group is
    empty)."""
    nll = F.cross_entropy(logits.float(), targets, reduction="none")  # [n]
    sums = torch.zeros(num_rows, device=nll.device, dtype=nll.dtype).index_add(0, rows, nll)
    counts = torch.bincount(rows, minlength=num_rows).to(nll.dtype)
    return sums / counts
