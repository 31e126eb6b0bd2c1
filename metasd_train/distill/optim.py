"""The optimiser every drafter trains with: AdamW, linear warm-up, cosine decay to 10%."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, warmup_steps: int, max_steps: int) -> float:
    """Learning-rate factor at `step`: linear warm-up, then cosine decay to 10%."""
    if step < warmup_steps:
        return (step + 1) / max(warmup_steps, 1)
    frac = (step - warmup_steps) / max(max_steps - warmup_steps, 1)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def adamw_warmup_cosine(module: torch.nn.Module, hp) -> dict:
    """Lightning's configure_optimizers answer for `module`'s trainable parameters; `hp` has lr,
    weight_decay, warmup_steps and max_steps."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, hp.warmup_steps, hp.max_steps))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
