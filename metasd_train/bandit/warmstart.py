"""Warm start from the acceptance log: per (request, arm) on-policy statistics as pseudo-observations.

Each logged request is replayed with each arm fixed, so an arm contributes one pseudo-observation per
round it actually plays (not one per overlapping start position, which would weight a request by its
length and an arm by its shortness). Rewards come from the same reward functions as in the engine
(bandit/rewards.py via bandit/replay.py). Every pseudo-observation weighs `weight` (bandit.prior_strength).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.linucb import LinUCB
from metasd_train.bandit.policies import FixedArm, Policy
from metasd_train.bandit.replay import features_of, walk
from metasd_train.bandit.rewards import chosen_outcome, reward_fn


@dataclass
class ArmRounds:
    """One arm's on-policy rounds in one request: how many could draft, their rewards' sum and sum of squares."""

    request: int
    arm: int
    n: int
    sum: float
    sumsq: float


def on_policy(requests: dict[int, dict], n_arms: int, reward: str, sleeping: bool = False) -> list[ArmRounds]:
    """Per (request, arm): the rounds that arm plays when it drafts the whole request, scored by `reward`;
    with `sleeping`, only the rounds it had a proposal for (a sleeping chooser never plays the others)."""
    score, out = reward_fn(reward), []
    for rid, req in requests.items():
        for arm in range(n_arms):
            rounds = walk(req, BanditChooser(FixedArm(n_arms, arm)))
            rs = [score(chosen_outcome(r)) for r in rounds if r.could_draft and (r.drafted > 0 or not sleeping)]
            out.append(ArmRounds(rid, arm, len(rs), sum(rs), sum(r * r for r in rs)))
    return out


def prior_stats(stats: list[ArmRounds], n_arms: int, weight: float) -> torch.Tensor:
    """[3, K]: weight * (rounds, reward sum, reward sum of squares) per arm."""
    out = torch.zeros(3, n_arms, dtype=torch.float64)
    for s in stats:
        out[:, s.arm] += torch.tensor([s.n, s.sum, s.sumsq], dtype=torch.float64)
    return weight * out


def design(requests: dict[int, dict], stats: list[ArmRounds], featurizer: Featurizer):
    """LinUCB rows, one per (request, arm): (contexts [N, d], arms [N], mean rewards [N], round counts [N]).

    Each arm's rows weigh by the rounds it played, so arms keep their own widths (an arm with long
    blocks plays fewer rounds and stays less certain).
    """
    kept = [s for s in stats if s.n > 0]
    xs = torch.stack([featurizer(features_of(requests[s.request])) for s in kept])
    arms = torch.tensor([s.arm for s in kept])
    means = torch.tensor([s.sum / s.n for s in kept], dtype=torch.float64)
    counts = torch.tensor([float(s.n) for s in kept], dtype=torch.float64)
    return xs, arms, means, counts


def warm_start(
    policy: Policy,
    requests: dict[int, dict],
    reward: str,
    weight: float = 1.0,
    featurizer: Featurizer | None = None,
    sleeping: bool = False,
) -> None:
    """Set `policy`'s prior from the log (LinUCB: a weighted ridge fit; others: pseudo-counts)."""
    if weight <= 0 or not requests:
        return
    stats = on_policy(requests, policy.n_arms, reward, sleeping and policy.sleeping)
    if isinstance(policy, LinUCB):
        if featurizer is None:
            raise ValueError("a LinUCB warm start needs the featurizer")
        xs, arms, means, counts = design(requests, stats, featurizer)
        policy.fit(xs, arms, means, weight * counts)
    policy.set_prior(*prior_stats(stats, policy.n_arms, weight))
