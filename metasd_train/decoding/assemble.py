"""Build engine arms from drafter specs, and the engine from decode settings.

A spec is one drafter of an ensemble or a distill stage: {"name", "arm", "path", "gamma",
"adapter"?}. `arm` picks the builder from ARM_BUILDERS, so a new drafter family registers one
function instead of growing an if-chain.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from metasd_train.decoding.arms import ModelArm, NgramArm
from metasd_train.decoding.engine import SpecEngine
from metasd_train.decoding.sampling import SamplingParams
from metasd_train.errors import UserError
from metasd_train.models.tokenizers import check_vocab, eos_ids


def load_drafter(spec: dict, device: torch.device | str, dtype: torch.dtype):
    """A drafter model from its HF folder, with its PEFT adapter merged in (specialists)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec["path"], dtype=dtype, trust_remote_code=False)
    if spec.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec["adapter"]).merge_and_unload()
    return model.to(device).eval()


def model_arm(spec: dict, target, tokenizer) -> ModelArm:
    model = load_drafter(spec, target.device, target.dtype)
    vocab = target.config.vocab_size
    check_vocab(vocab, model.config.vocab_size, f"drafter {spec['name']}", len(tokenizer) if tokenizer else None)
    return ModelArm(spec["name"], model, vocab, gamma=int(spec["gamma"]))


def load_head_spec(spec: dict, device, dtype):
    """A draft head from its folder, with a LoRA specialist's adapter merged in."""
    from metasd_train.models.head_io import load_head

    head = load_head(spec["path"], device, dtype)
    if spec.get("adapter"):
        from peft import PeftModel

        head = PeftModel.from_pretrained(head, spec["adapter"]).merge_and_unload()
    return head.to(device=device, dtype=dtype).eval()


def head_arm(spec: dict, target, tokenizer):
    from metasd_train.decoding.head_arm import HeadArm

    head = load_head_spec(spec, target.device, target.dtype)
    if head.config.vocab_size != target.config.vocab_size:
        raise UserError(f"head {spec['name']!r} was built for a {head.config.vocab_size}-token vocabulary, "
                        f"the target has {target.config.vocab_size}; train the head for this target")  # fmt: skip
    return HeadArm(spec["name"], head, target.get_input_embeddings(), target.config.vocab_size, int(spec["gamma"]))


ARM_BUILDERS: dict[str, Callable] = {"model": model_arm, "head": head_arm}


def register_arm(family: str):
    def register(fn):
        ARM_BUILDERS[family] = fn
        return fn

    return register


def build_arms(specs: list[dict], target, tokenizer, ngram: dict | None, seconds: dict | None = None) -> list:
    """One arm per spec, then the n-gram arm when `ngram` ({"gamma", "length"?}) is set; `seconds` gets
    each load's time."""
    arms = []
    for spec in specs:
        family = spec.get("arm", "model")
        if family not in ARM_BUILDERS:
            raise UserError(
                f"drafter {spec['name']!r} has unknown arm family {family!r}; known: {', '.join(ARM_BUILDERS)}"
            )
        start = time.perf_counter()
        arms.append(ARM_BUILDERS[family](spec, target, tokenizer))
        if seconds is not None:
            seconds[spec["name"]] = round(time.perf_counter() - start, 2)
    if ngram:
        arms.append(
            NgramArm("ngram", target.config.vocab_size, int(ngram["gamma"]), length=ngram.get("length", "fixed"))
        )
    return arms


def sampling_params(decode_cfg) -> SamplingParams:
    return SamplingParams(float(decode_cfg.temperature), int(decode_cfg.top_k), float(decode_cfg.top_p))


def make_engine(target, tokenizer, arms, decode_cfg, full_feedback: bool = False) -> SpecEngine:
    """The engine for a decode config; `decode.fast`: the fast path (static caches and our forward; CUDA
    graphs on a GPU, eager on a CPU, where it also beats the HF-cache path: bench/results/cpu-fastpath)."""
    return SpecEngine(
        target,
        arms,
        sampling_params(decode_cfg),
        eos_ids(target, tokenizer),
        early_stop=float(decode_cfg.early_stop),
        full_feedback=full_feedback,
        fast=bool(decode_cfg.fast),
        max_len=int(decode_cfg.max_len),
        compile=str(decode_cfg.get("compile", "static")),
    )
