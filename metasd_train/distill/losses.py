"""Token-level distillation losses on response positions only (torchtune's kd_losses, per position)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _fkl(log_p, log_q):  # KL(p || q): mass-covering
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _rkl(log_p, log_q):  # KL(q || p): mode-seeking
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def _tv(log_p, log_q):  # 1 - acceptance rate of speculative sampling
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def _none(log_p, log_q):  # `ce`: cross-entropy on the target's tokens only (the module adds it)
    return torch.zeros_like(log_p[..., 0])


LOSSES = {"fkl": _fkl, "rkl": _rkl, "tv": _tv, "ce": _none}  # distill.loss; read by config validation


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over rows of a divergence between teacher (p) and student (q) next-token distributions."""
    # student_logits, teacher_logits: [N, V] (response positions only) -> []
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    log_p = F.log_softmax(teacher_logits.float(), dim=-1)
    return LOSSES[kind](log_p, log_q).mean()


def acceptance(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-row expected acceptance 1 - TV(p, q) at temperature 1."""
    # [N, V], [N, V] -> [N]
    p, q = teacher_logits.float().softmax(-1), student_logits.float().softmax(-1)
    return 1 - 0.5 * (p - q).abs().sum(-1)
