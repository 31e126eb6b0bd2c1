"""Connects a policy to the engine: picks which reward it learns from, builds its context."""

from __future__ import annotations

from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.policies import Policy
from metasd_train.decoding.engine import RoundContext

REWARDS = ("divergence", "efficiency", "throughput")


class BanditChooser:
    """The engine's Chooser over a Policy; `reset_per_request` re-explores on every request."""

    def __init__(
        self,
        policy: Policy,
        reward: str = "divergence",
        featurizer: Featurizer | None = None,
        reset_per_request: bool = False,
    ):
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}")
        self.policy, self.reward, self.featurizer = policy, reward, featurizer
        self.reset_per_request = reset_per_request
        self.x = None

    def begin(self, ctx: RoundContext) -> None:
        if self.reset_per_request:
            self.policy.reset()
        self.x = self.featurizer(ctx.features) if (self.featurizer and self.policy.contextual) else None

    def select(self, ctx: RoundContext) -> int:
        return self.policy.select(self.x)

    def observe(self, ctx: RoundContext, arm: int, rewards: dict[str, float]) -> None:
        if self.reward in rewards:  # idle arms in full-feedback mode report divergence only
            self.policy.update(arm, rewards[self.reward], self.x)
