"""How each drafter family trains and is saved by the distill stage: model drafters (token-level KD)
and feature-level heads (EAGLE-3 training-time test). Keyed by the arm family of `drafter.kind`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Family:
    module: Callable  # (student, teacher, domains, distill_cfg, drafter_cfg, lr, steps) -> LightningModule
    save: Callable  # (student, folder, tokenizer) -> None
    monitor: str | None = None  # validation metric whose best value picks the weights kept (None: the last)


def _model_module(student, teacher, domains, c, d, lr, steps):
    from metasd_train.distill.module import DistillModule

    return DistillModule(
        student, teacher, domains, c.loss, c.ce_weight, lr, c.weight_decay, min(c.warmup_steps, steps), steps
    )


def _save_model(student, folder: Path, tokenizer) -> None:
    student.save_pretrained(folder)  # PEFT adapter format for LoRA specialists
    if not hasattr(student, "peft_config"):
        tokenizer.save_pretrained(folder)


def _head_module(student, teacher, domains, c, d, lr, steps):
    from metasd_train.distill.head_module import HeadDistillModule

    return HeadDistillModule(
        student, teacher, domains, c.loss, d.head.tv_weight, d.head.ttt_steps, d.head.step_decay, lr,
        c.weight_decay, min(c.warmup_steps, steps), steps,
    )  # fmt: skip


def _save_head(student, folder: Path, tokenizer) -> None:
    if hasattr(student, "peft_config"):  # a LoRA specialist: the adapter alone, over the generalist head
        student.save_pretrained(folder)
        return
    from metasd_train.models.head_io import save_head

    save_head(student, folder)


FAMILIES: dict[str, Family] = {
    "model": Family(_model_module, _save_model),
    "head": Family(_head_module, _save_head, "val/accept_len/all"),  # simulated accepted length of a chain
}
