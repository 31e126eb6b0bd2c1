"""LoRA specialists over peft: wrap, save in PEFT format, merge for fast decoding."""

from __future__ import annotations

import copy

from peft import LoraConfig, PeftModel, get_peft_model


def add_lora(model, r: int, alpha: int, dropout: float, target_modules: list[str]):
    """A peft LoRA wrapper around a copy of `model` (the base stays untouched)."""
    cfg = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM"
    )
    return get_peft_model(copy.deepcopy(model), cfg)


def load_adapter(base, adapter_dir: str):
    return PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir)


def merged(peft_model):
    """A plain transformers model with the adapter folded into its weights."""
    return copy.deepcopy(peft_model).merge_and_unload()
