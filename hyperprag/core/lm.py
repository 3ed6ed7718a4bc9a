"""The language-model head where a loss is taken, and the loss of each target token: one implementation
for the teacher's training loss, the hypernetwork's KL and answer losses, and the gold-answer loss of
answering and evaluation.

The decoder runs once over the whole batch; the LM head (a [hidden, vocab] matmul, the most expensive
step for a small model with a large vocabulary) runs only at the positions that predict a target token,
with Gemma's final-logit softcap applied exactly as the model's own forward does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def next_token_logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, select: Tensor) -> Tensor:
    """Logits [n, V] predicting token t+1 at each position t where `select` ([b, t-1] bool) is set.

    With an attention mask, position ids count real tokens only, so left- and right-padded batches give
    the same numbers (and the same positions as `generate`). Without one, the batch must have no padding
    before a real token (right-padded or none): causal attention then never lets a real token see padding,
    and the decoder takes its faster unmasked path.
    """
    kwargs = {}
    if attention_mask is not None:
        kwargs = {"attention_mask": attention_mask,
                  "position_ids": (attention_mask.long().cumsum(-1) - 1).clamp_min(0)}
    hidden = model.get_decoder()(input_ids=input_ids, use_cache=False, **kwargs).last_hidden_state  # [b, t, h]
    return output_logits(model, hidden[:, :-1][select])


def target_logits(model: nn.Module, input_ids: Tensor, labels: Tensor, attention_mask: Tensor | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """At every labelled position (labels != IGNORE): the logits that predict it [n, V] (row-major), its
    token [n] and its batch row [n]."""
    shifted = labels[:, 1:]
    select = shifted != IGNORE  # [b, t-1]: token t+1 is predicted at position t
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(select)[select]
    return next_token_logits(model, input_ids, attention_mask, select), shifted[select], rows


def per_row_nll(logits: Tensor, targets: Tensor, rows: Tensor, num_rows: int) -> Tensor:
    """Mean token NLL of each of `num_rows` groups (sequences, documents): [num_rows] (nan where a group is
    empty)."""
    nll = F.cross_entropy(logits.float(), targets, reduction="none")  # [n]
    sums = torch.zeros(num_rows, device=nll.device, dtype=nll.dtype).index_add(0, rows, nll)
    counts = torch.bincount(rows, minlength=num_rows).to(nll.dtype)
    return sums / counts
