"""Warm start from full-information acceptance logs (every arm on every logged prompt)."""

from __future__ import annotations

import torch

from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.policies import LinUCB, Policy


def design(rows: list[dict], featurizer: Featurizer, reward: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(contexts [N, d], arms [N], rewards [N]) from logged rounds that drafted something."""
    last = {}
    for r in rows:
        last[(r["request"], r["arm"])] = max(last.get((r["request"], r["arm"]), 0), r["round"])
    rows = [r for r in rows if r["round"] < last[(r["request"], r["arm"])]]  # every round that could draft
    xs = torch.stack([featurizer(torch.tensor(r["features"]) if r["features"] else None) for r in rows])
    arms = torch.tensor([r["arm"] for r in rows])
    rewards = torch.tensor([float(r[reward]) for r in rows], dtype=torch.float64)
    return xs, arms, rewards


def warm_start(
    policy: Policy, xs: torch.Tensor, arms: torch.Tensor, rewards: torch.Tensor, weight: float = 1.0
) -> None:
    """LinUCB: ridge fit; count-based policies: prior counts and sums (scaled by `weight`)."""
    if isinstance(policy, LinUCB):
        policy.fit(xs, arms, rewards, weight)
        return
    for k in range(policy.n_arms):
        sel = arms == k
        policy.counts[k] += weight * sel.sum()
        policy.sums[k] += weight * rewards[sel].sum()
