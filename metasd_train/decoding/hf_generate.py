"""The target alone (or HF's own assisted generation) through `generate`: the reference and baselines.

One home for "HF generate + sync + time" (decode.py's baseline, the bench's HF rows, the target's
greedy answers in log_acceptance, the lossless check) and for the assisted-generation settings.
"""

from __future__ import annotations

import time

import torch

from metasd_train.decoding.sampling import SamplingParams


def sampling_kwargs(params: SamplingParams) -> dict:
    """`generate` keyword arguments with the same temperature / top-k / top-p processing as ours."""
    if params.greedy:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": params.temperature, "top_k": params.top_k or None, "top_p": params.top_p}


def assisted(drafter, gamma: int) -> dict:
    """HF assisted generation with a constant block of `gamma` drafts (no dynamic schedule, no early exit)."""
    cfg = drafter.generation_config
    cfg.num_assistant_tokens, cfg.num_assistant_tokens_schedule, cfg.assistant_confidence_threshold = (
        gamma,
        "constant",
        0.0,
    )
    return {"assistant_model": drafter}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def hf_generate(
    model,
    prompt: list[int],
    max_new_tokens: int,
    eos: list[int],
    params: SamplingParams = SamplingParams(),
    static: bool = False,
    **extra,
) -> tuple[list[int], float]:
    """New tokens and seconds of `model.generate` (static=True: static cache, compiled by HF)."""
    device = next(model.parameters()).device
    x = torch.tensor([prompt], device=device)
    kw = {**sampling_kwargs(params), **extra, **({"cache_implementation": "static"} if static else {})}
    sync(device)
    start = time.perf_counter()
    out = model.generate(x, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos[0], **kw)
    sync(device)
    return out[0, len(prompt) :].tolist(), time.perf_counter() - start
