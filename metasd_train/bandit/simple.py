"""Policies that learn nothing (fixed, round robin, random) and Gaussian Thompson sampling."""

from __future__ import annotations

import numpy as np
import torch

from metasd_train.bandit.policy import Policy


class FixedArm(Policy):
    """Always `arm`: the single-drafter baseline, and `decode.py arm=NAME`."""

    def __init__(self, n_arms: int, arm: int = 0, seed: int = 0):
        super().__init__(n_arms, seed)
        if not 0 <= arm < n_arms:
            raise ValueError(f"fixed arm {arm} is out of range for {n_arms} arms")
        self.arm = arm

    def select(self, x=None, asleep=frozenset()) -> int:
        return self.arm

    def state_dict(self):
        return {**super().state_dict(), "arm": torch.tensor(self.arm)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.arm = int(state["arm"])


class RoundRobin(Policy):
    def select(self, x=None, asleep=frozenset()) -> int:
        return int(self.t) % self.n_arms


class RandomArm(Policy):
    sleeping = True

    def select(self, x=None, asleep=frozenset()) -> int:
        awake = [a for a in range(self.n_arms) if a not in asleep] or list(range(self.n_arms))
        return awake[int(torch.randint(len(awake), (1,), generator=self.gen))]


class Thompson(Policy):
    """Gaussian Thompson sampling: draw each arm's mean from N(mean, sigma^2 / (n + 1))."""

    def __init__(self, n_arms: int, sigma: float = 0.5, seed: int = 0):
        super().__init__(n_arms, seed)
        self.sigma = sigma

    sleeping = True

    def select(self, x=None, asleep=frozenset()) -> int:
        std = self.sigma / torch.sqrt(self.counts + 1)
        draw = (self.means + std * torch.randn(self.n_arms, generator=self.gen, dtype=torch.float64)).numpy()
        if (awake := self._awake(asleep)) is not None:
            draw = np.where(awake, draw, -np.inf)
        return int(np.argmax(draw))
