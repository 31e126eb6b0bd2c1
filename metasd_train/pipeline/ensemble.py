"""Load a drafter ensemble (from a run's distill stage or its export) into engine arms."""

from __future__ import annotations

from pathlib import Path

import torch

from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.models.tokenizers import check_vocab


def distill_specs(distill_dir: Path) -> list[dict]:
    """Drafters of a distill stage: the generalist and one adapter (or full model) per domain."""
    specs = [{"name": "generalist", "path": str(distill_dir / "generalist")}]
    spec_root = distill_dir / "specialists"
    for d in sorted(spec_root.iterdir()) if spec_root.exists() else []:
        if (d / "adapter_config.json").exists():
            specs.append({"name": d.name, "path": str(distill_dir / "generalist"), "adapter": str(d)})
        else:
            specs.append({"name": d.name, "path": str(d)})
    return specs


def load_drafter(spec: dict, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec["path"], dtype=dtype)
    if spec.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec["adapter"]).merge_and_unload()
    return model.to(device).eval()


def build_arms(specs: list[dict], target, tokenizer, gamma: int, ngram: bool, ngram_gamma: int) -> list:
    vocab = target.config.vocab_size
    arms = []
    for spec in specs:
        model = load_drafter(spec, target.device, target.dtype)
        check_vocab(vocab, model.config.vocab_size, f"drafter {spec['name']}", len(tokenizer) if tokenizer else None)
        arms.append(ModelArm(spec["name"], model, vocab, gamma=int(spec.get("gamma", gamma))))
    if ngram:
        arms.append(NgramArm("ngram", vocab, gamma=ngram_gamma))
    return arms


def eos_ids(target, tokenizer) -> list[int]:
    ids = getattr(target.generation_config, "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
    if tokenizer is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted({i for i in ids if i is not None})


def make_engine(target, tokenizer, arms, decode_cfg, full_feedback: bool = False) -> SpecEngine:
    params = SamplingParams(float(decode_cfg.temperature), int(decode_cfg.top_k), float(decode_cfg.top_p))
    return SpecEngine(
        target,
        arms,
        params,
        eos_ids(target, tokenizer),
        early_stop=float(decode_cfg.early_stop),
        full_feedback=full_feedback,
        fast=bool(decode_cfg.get("fast", True)) and target.device.type == "cuda",
        max_len=int(decode_cfg.get("max_len", 2048)),
    )
