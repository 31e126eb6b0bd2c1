"""LoRA specialists over peft (saved in PEFT format; merged at load time for decoding, see pipeline/ensemble.py)."""

from __future__ import annotations

import copy

from peft import LoraConfig, get_peft_model


def add_lora(model, r: int, alpha: int, dropout: float, target_modules: list[str]):
    """A peft LoRA wrapper around a copy of `model` (the base stays untouched)."""
    cfg = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM"
    )
    return get_peft_model(copy.deepcopy(model), cfg)
