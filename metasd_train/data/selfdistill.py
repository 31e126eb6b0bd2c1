"""The target answers the domain prompts (batched, greedy and optionally sampled): drafter training data."""

from __future__ import annotations

import torch

from metasd_train.models.attention import no_cudnn_attention
from metasd_train.models.tokenizers import eos_ids


def _trim(seq: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(seq):
        if t in eos:
            return seq[: i + 1]
    return seq


@torch.inference_mode()
def answer(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[list[int]]:
    """Response token ids for each prompt (left-padded batches, cut after the first EOS)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = set(eos_ids(model, tokenizer))
    out: list[list[int]] = []
    gen = torch.Generator().manual_seed(seed)  # CPU: only draws the per-batch seeds
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        kwargs = (
            {"do_sample": False}
            if temperature == 0
            else {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        )
        torch.manual_seed(int(torch.randint(1 << 30, (1,), generator=gen)))
        with no_cudnn_attention():  # a new key length every token
            seqs = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=sorted(eos),
                **kwargs,
            )
        out.extend(_trim(s[width:].tolist(), eos) for s in seqs)
    return out
