"""Full-information acceptance logs, exact for greedy decoding.

Greedy speculative decoding is lossless, so every arm meets the same committed sequence. A greedy
drafter's draft from position t depends only on the prefix, so one teacher-forced forward per
drafter tells, for every start position t, how many tokens that arm would have had accepted in a
round starting there. One row per (request, start position, arm): `round` is the position.
Replaying these rows with any policy reproduces the engine's greedy rounds exactly.
"""

from __future__ import annotations

import time

import torch

from metasd_train.decoding.arms import NgramArm


@torch.inference_mode()
def agreement(arm, seq: list[int], start: int, device) -> list[bool]:
    """For positions j in [start, len): does the arm's next-token prediction at j equal seq[j]?"""
    if isinstance(arm, NgramArm):
        raise TypeError("n-gram proposals are multi-token; see ngram_rows")
    logits = arm.model(input_ids=torch.tensor([seq[:-1]], device=device)).logits[0]  # [L-1, V]
    pred = logits[start - 1 :].argmax(-1).tolist()
    return [p == t for p, t in zip(pred, seq[start:])]


def block_rows(matches: list[list[bool]], remaining: list[int], gamma: int) -> list[tuple[int, int, float]]:
    """(drafted, accepted, divergence) per start position from per-position draft agreement.

    `matches[i]` covers the arm's proposal from position i (an n-gram proposal may be short or empty).
    """
    out = []
    for m, rem in zip(matches, remaining):
        block = m[: min(gamma, rem - 1)]
        k = len(block)
        acc = next((i for i, ok in enumerate(block) if not ok), k)
        out.append((k, acc, sum(block) / k if k else 0.0))
    return out


def arm_rows(arm, seq: list[int], prompt_len: int, device) -> list[tuple[int, int, float]]:
    """(drafted, accepted, divergence) of a round of `arm` starting at each new-token position."""
    n = len(seq) - prompt_len
    remaining = [n - i for i in range(n)]
    if isinstance(arm, NgramArm):
        matches = []
        for t in range(prompt_len, len(seq)):
            proposal = arm.lookup(seq[:t], arm.gamma)
            matches.append([a == b for a, b in zip(proposal, seq[t:])])
        return block_rows(matches, remaining, arm.gamma)
    agree = agreement(arm, seq, prompt_len, device)
    return block_rows([agree[i:] for i in range(n)], remaining, arm.gamma)


def forward_seconds(model, device, width: int, reps: int = 5) -> float:
    """Median wall time of one cached-free forward of `width` tokens (for the throughput reward)."""
    x = torch.zeros(1, width, dtype=torch.long, device=device)
    times = []
    with torch.inference_mode():
        for _ in range(reps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(input_ids=x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return sorted(times[1:])[reps // 2]
