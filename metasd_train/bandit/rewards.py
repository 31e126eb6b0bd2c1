"""Per-round rewards in [0, 1], one function per name, computed by the chooser, never the engine.

Every reward reads an `Outcome`: one arm's result in one round, whether that arm drafted the round
(`chosen_outcome`, from the engine's RoundRecord), sat it out under full information
(`idle_outcome`, from its IdleScore and the chooser's draft-cost estimate). The acceptance log is
replayed as RoundRecords (bandit/replay.py), so the engine path, the log and the fit all score
through these functions and `REWARDS`.

`speed` is aligned with tokens per second: the round's tokens over the round's time, relative to
what the target alone makes in that time (one token per `t_step`), divided by `max_block` so that a
full block drafted for free scores 1 and the target alone scores 1 / max_block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metasd_train.errors import UserError


@dataclass(frozen=True)
class Outcome:
    """One arm's round, on the same footing whether it drafted, sat idle or was replayed."""

    drafted: int  # tokens proposed (idle: positions scored)
    accepted: float  # tokens accepted (sampled idle arms: the expected count)
    divergence: float  # mean 1 - TV(p, q) over the proposed block
    seconds: float  # what the round took (or would have) with this arm: drafting + verification
    t_step: float  # one target step of width 1, seconds: the target alone's time per token
    max_block: int  # the longest round any arm can give: γmax + 1


def speed(o: Outcome) -> float:
    """(accepted + 1) · t_step / seconds / max_block: the round's speed-up over the target alone, scaled.

    A round with no proposal earns what the target alone would (1 / max_block).
    """
    if o.drafted == 0:
        return 1.0 / o.max_block
    return min((o.accepted + 1) * o.t_step / max(o.seconds, 1e-12) / o.max_block, 1.0)


def divergence(o: Outcome) -> float:
    """MetaSD's block divergence reward: mean 1 - TV over the block (0 with no proposal)."""
    return o.divergence if o.drafted else 0.0


def efficiency(o: Outcome) -> float:
    """MetaSD's block efficiency reward: accepted / drafted (0 with no proposal)."""
    return o.accepted / o.drafted if o.drafted else 0.0


REWARDS: dict[str, Callable[[Outcome], float]] = {"speed": speed, "divergence": divergence, "efficiency": efficiency}


def reward_fn(name: str) -> Callable[[Outcome], float]:
    """The reward called `name`; a UserError naming the valid ones otherwise."""
    if name not in REWARDS:
        raise UserError(f"bandit.reward={name!r} is not valid; choose one of: {', '.join(REWARDS)}")
    return REWARDS[name]


def round_seconds(rec) -> float:
    """The chosen arm's share of a round: wall time less idle scoring and the bandit's own time."""
    return max(rec.t_round - rec.t_idle - rec.t_bandit, rec.t_draft + rec.t_verify, 1e-12)


def chosen_outcome(rec) -> Outcome:
    """The arm that drafted the round (`rec`: a decoding.records.RoundRecord)."""
    return Outcome(rec.drafted, rec.accepted, rec.divergence, round_seconds(rec), rec.t_step, rec.max_block)


def idle_outcome(rec, score, draft_seconds_per_token: float) -> Outcome:
    """An idle arm under full information: the round as it would have gone with that arm drafting.

    Verification and round overhead are the chosen arm's (same target, similar width); drafting is
    charged at the idle arm's own running cost per token over the positions it was scored on.
    """
    rest = max(round_seconds(rec) - rec.t_draft, 1e-12)
    seconds = rest + draft_seconds_per_token * score.drafted
    return Outcome(score.drafted, score.accepted, score.divergence, seconds, rec.t_step, rec.max_block)
