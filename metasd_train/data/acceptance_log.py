"""Full-information acceptance logs, exact for greedy decoding.

Greedy speculative decoding is lossless, so every arm meets the same committed sequence. A greedy
drafter's draft from position t, while it matches, depends only on the prefix, so teacher-forced
forwards tell, for every start position t, how many tokens that arm would have had accepted in a
round starting there. One row per (request, start position, arm): `round` is the position.
Each row carries what the engine's RoundRecord carries (tokens, divergence, timed draft and verify
seconds, t_step, max_block), so bandit/replay.py turns it into a RoundRecord and every reward is
computed by the same function as in the engine. Replaying these rows with any policy reproduces
the engine's greedy rounds exactly (drafted, accepted); block divergence is exact up to the first
rejection only (past it the log teacher-forces where the engine conditions on the draft). Times:
the verify is a timed forward of the target; each arm's draft seconds per token and the rest of its
round (host work, launches; what makes a cheap-to-draft arm's round dearer than its forwards) are
measured on the engine's own rounds with that arm fixed.
"""

from __future__ import annotations

from dataclasses import dataclass


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


def arm_rows(arm, seq: list[int], prompt_len: int, target) -> list[tuple[int, int, float]]:
    """(drafted, accepted, divergence) of a round of `arm` starting at each new-token position; every
    arm says what it would have drafted there (`block_matches`: one forward for model arms, one target
    forward and γ unrolled passes for heads, lookups for n-grams)."""
    n = len(seq) - prompt_len
    return block_rows(arm.block_matches(seq, prompt_len, target), [n - i for i in range(n)], arm.gamma)


@dataclass(frozen=True)
class LogTiming:
    """Times shared by every row of a log (so rows do not depend on how many ranks ran)."""

    t_step: float  # the target, width 1: the target alone's time per token
    t_verify: float  # the target, width max_block: a verify forward
    max_block: int  # γmax + 1
    t_token: list[float]  # per arm: seconds per drafted token, from the engine's rounds
    t_other: list[float] | None = None  # per arm: a round's seconds beyond draft and verify, as the reward counts


def request_rows(request: int, domain: str, features: list[float], arms, blocks: list, timing: LogTiming) -> list[dict]:
    """Rows of one request: `blocks[i]` is arm i's (drafted, accepted, divergence) per start position."""
    rows = []
    for i, (arm, per_pos) in enumerate(zip(arms, blocks)):
        for t, (k, n, div) in enumerate(per_pos):
            rows.append(
                {
                    "request": request,
                    "domain": domain,
                    "features": features,
                    "round": t,
                    "arm": i,
                    "arm_name": arm.name,
                    "drafted": k,
                    "accepted": n,
                    "divergence": div,
                    "t_draft": k * timing.t_token[i],
                    "t_verify": timing.t_verify,
                    "t_other": timing.t_other[i] if timing.t_other else 0.0,
                    "t_step": timing.t_step,
                    "max_block": timing.max_block,
                }
            )
    return rows
