r"""Training losses of the hypernetwork against per-document teacher LoRAs, each a scalar tensor.

Parameter losses compare generated (student) and teacher matrices:

* `coord_loss`  per-coordinate MSE of A and of B, each divided by the teacher's mean square of that
  module (document, layer, module type). Raw MSE is dominated by A and vanishes on B, whose trained
  values are ~1e-3: that is why a plain MSE "never decreases" in practice. Meaningful only because every
  teacher starts from the same A init (PRAG), which fixes the factorization's gauge.
* `deltaw_loss` the update itself, gauge free: ||s(B_1 A_1 - B_2 A_2)||_F^2 / ||s B_2 A_2||_F^2, with
  the norms and the cross term from r x r Gram products, never materializing dW [out, in]:
  ||B A||^2 = tr((B^T B)(A A^T)),  <B_1 A_1, B_2 A_2> = tr((B_1^T B_2)(A_2 A_1^T)).

Function losses run the frozen base model with an adapter applied (per-example batched hooks) and take
the LM head only at the positions that carry a loss (`select_logits`, hyperprag/core/lm.py): `kl_loss` (teacher-adapted vs
student-adapted next-token distributions) and `lm_loss` (answer tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperprag.core.lm import IGNORE, next_token_logits
from hyperprag.core.lora import LoraSpec, LoraWeights


def _f(t: Tensor) -> Tensor:
    """float32 for half-precision inputs; float64 stays float64."""
    return t if t.dtype == torch.float64 else t.float()


def _pairs(student: LoraWeights, teacher: LoraWeights, same_rank: bool = True):
    """(module, student A, B, teacher A, B) in float32; shapes must agree (but for the rank, if not `same_rank`)."""
    if set(student.A) != set(teacher.A):
        raise ValueError(f"student modules {sorted(student.A)} != teacher modules {sorted(teacher.A)}")

    def shapes(w: LoraWeights, m: str) -> tuple:  # A [..., r, in] and B [..., out, r], rank left out if allowed
        a, b = w.A[m].shape, w.B[m].shape
        return (a, b) if same_rank else (a[:-2] + a[-1:], b[:-1])

    for m in teacher.A:
        if shapes(student, m) != shapes(teacher, m):
            raise ValueError(f"{m}: student A{tuple(student.A[m].shape)} B{tuple(student.B[m].shape)} vs teacher "
                             f"A{tuple(teacher.A[m].shape)} B{tuple(teacher.B[m].shape)}")
        yield m, _f(student.A[m]), _f(student.B[m]), _f(teacher.A[m]), _f(teacher.B[m])


def coord_loss(student: LoraWeights, teacher: LoraWeights, eps: float = 1e-12) -> Tensor:
    """Mean over (document, layer, module type) of MSE(A)/ms(A_t) and MSE(B)/ms(B_t), averaged over A and B."""
    terms = []
    for _, a_s, b_s, a_t, b_t in _pairs(student, teacher):
        for s, t in ((a_s, a_t), (b_s, b_t)):  # [(b,) L, x, y]
            mse = (s - t).pow(2).mean(dim=(-2, -1))  # [(b,) L]
            ms = t.detach().pow(2).mean(dim=(-2, -1)).clamp_min(eps)
            terms.append((mse / ms).mean())
    return torch.stack(terms).mean()


def deltaw_inner(a1: Tensor, b1: Tensor, a2: Tensor, b2: Tensor) -> Tensor:
    """<B1 A1, B2 A2>_F over the last two dims: A [..., r, in], B [..., out, r] -> [...]."""
    gb = b1.transpose(-1, -2) @ b2  # [..., r1, r2]
    ga = a2 @ a1.transpose(-1, -2)  # [..., r2, r1]
    return (gb * ga.transpose(-1, -2)).sum(dim=(-2, -1))  # tr(gb @ ga)


def deltaw_sq_norm(a: Tensor, b: Tensor) -> Tensor:
    """||B A||_F^2 = tr((B^T B)(A A^T)): A [..., r, in], B [..., out, r] -> [...]."""
    return deltaw_inner(a, b, a, b)


def deltaw_loss(student: LoraWeights, teacher: LoraWeights, eps: float = 1e-20) -> Tensor:
    """Relative squared error of the updates: per (document, module type), sum over layers of
    ||dW_s - dW_t||^2 divided by the sum of ||dW_t||^2; then the mean. The LoRA scale cancels (when both have
    the same); the ranks may differ (Gram products of any r_s x r_t)."""
    terms = []
    for _, a_s, b_s, a_t, b_t in _pairs(student, teacher, same_rank=False):
        ss = deltaw_sq_norm(a_s, b_s)  # [(b,) L]
        tt = deltaw_sq_norm(a_t, b_t).detach()
        st = deltaw_inner(a_s, b_s, a_t, b_t)
        err = (ss + tt - 2 * st).clamp_min(0).sum(-1)  # [(b,)]
        terms.append((err / tt.sum(-1).clamp_min(eps)).mean())
    return torch.stack(terms).mean()


def deltaw_cosine(weights: LoraWeights) -> Tensor:
    """Cosine similarity [b, b] between the documents' full updates (all layers and modules as one vector)."""
    if not weights.batched:
        raise ValueError("deltaw_cosine needs a batched LoraWeights")
    gram = None
    for m in weights.A:
        a, b = _f(weights.A[m]), _f(weights.B[m])  # [n, L, r, in], [n, L, out, r]
        gb = torch.einsum("ilor,jlos->ijlrs", b, b)  # B_i^T B_j: [n, n, L, r, r]
        ga = torch.einsum("jlsx,ilrx->ijlsr", a, a)  # A_j A_i^T: [n, n, L, r, r]
        g = (gb * ga.transpose(-1, -2)).sum(dim=(-3, -2, -1))  # [n, n]
        gram = g if gram is None else gram + g
    norm = gram.diagonal().clamp_min(1e-30).sqrt()
    return gram / (norm[:, None] * norm[None, :])


def mean_offdiag(mat: Tensor) -> Tensor:
    """Mean of the off-diagonal entries of a square matrix (nan for 1x1)."""
    n = mat.shape[0]
    if n < 2:
        return mat.new_tensor(float("nan"))
    return (mat.sum() - mat.diagonal().sum()) / (n * (n - 1))


def target_mask(labels: Tensor, attention_mask: Tensor | None, positions: str = "answer") -> Tensor:
    """Which positions t predict a scored token t+1: [b, t-1]; "answer" = labelled, "all" = every real pair."""
    if positions == "answer":
        return labels[:, 1:] != IGNORE
    if positions == "all":
        if attention_mask is None:
            raise ValueError("positions='all' needs the attention mask")
        am = attention_mask.bool()
        return am[:, 1:] & am[:, :-1]
    raise ValueError(f"positions must be 'answer' or 'all', got {positions!r}")


def select_logits(model: nn.Module, spec: LoraSpec, weights: LoraWeights | None, input_ids: Tensor,
                  attention_mask: Tensor, select: Tensor, groups: Tensor | None = None) -> Tensor:
    """Logits [n, V] predicting the next token at the `select`ed positions ([b, t-1]) with `weights` applied:
    one adapter per row, or with `groups` ([b]) one per group of rows, whose shared chat prefix is then
    computed once per adapter (hyperprag/core/lm.py; left- and right-padded batches give the same numbers)."""
    return next_token_logits(model, input_ids, attention_mask, select, adapter=(spec, weights), groups=groups)


def kl_loss(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over tokens of KL(p_teacher || p_student) (times T^2, the usual distillation scaling)."""
    if teacher_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of the target tokens ([n, V] logits, [n] targets)."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets)
