"""Token-level distillation losses on response positions only (torchtune's kd_losses, per position)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("fkl", "rkl", "tv", "ce")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over rows of a divergence between teacher (p) and student (q) next-token distributions."""
    # student_logits, teacher_logits: [N, V] (response positions only) -> []
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    log_p = F.log_softmax(teacher_logits.float(), dim=-1)
    if kind == "fkl":  # KL(p || q): mass-covering
        return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    if kind == "rkl":  # KL(q || p): mode-seeking
        return (log_q.exp() * (log_q - log_p)).sum(-1).mean()
    if kind == "tv":  # 1 - acceptance rate of speculative sampling
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1).mean()
    raise ValueError(f"unknown KD loss {kind!r}; choose one of {LOSSES}")


def acceptance(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-row expected acceptance 1 - TV(p, q) at temperature 1."""
    # [N, V], [N, V] -> [N]
    p, q = teacher_logits.float().softmax(-1), student_logits.float().softmax(-1)
    return 1 - 0.5 * (p - q).abs().sum(-1)
