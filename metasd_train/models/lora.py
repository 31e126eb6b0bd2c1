"""LoRA specialists over peft (saved in PEFT format; merged at load time for decoding, see decoding/assemble.py)."""

from __future__ import annotations

import copy

from peft import LoraConfig, get_peft_model


def add_lora(model, r: int, alpha: int, dropout: float, target_modules: list[str]):
    """A peft LoRA wrapper around a copy of `model` (the base stays untouched)."""
    task = "CAUSAL_LM" if hasattr(model, "prepare_inputs_for_generation") else None  # draft heads are no LMs
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type=task)
    return get_peft_model(copy.deepcopy(model), cfg)
