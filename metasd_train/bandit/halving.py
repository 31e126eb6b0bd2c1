"""Sequential Halving (Karnin et al. 2013), as MetaSD runs it per request."""

from __future__ import annotations

import math

import torch

from metasd_train.bandit.policy import Policy


class SequentialHalving(Policy):
    """Phases of round-robin over the surviving arms; each phase keeps the better ceil(|S|/2).

    `budget` rounds are split evenly over ceil(log2 K) phases; once one arm survives it is played
    until `reset` (a new request in paper mode). Under full feedback every surviving arm's reward
    counts towards its phase mean, not only the queued arm's.
    """

    def __init__(self, n_arms: int, budget: int = 64, seed: int = 0):
        super().__init__(n_arms, seed)
        self.budget = budget
        self.phase = torch.zeros(2, n_arms, dtype=torch.float64)  # counts, sums in the current phase
        self.alive: list[int] = list(range(n_arms))
        self.queue: list[int] = []
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.alive = list(range(self.n_arms))
        self._start_phase()

    def _start_phase(self) -> None:
        phases = max(math.ceil(math.log2(self.n_arms)), 1)
        per_arm = max(self.budget // (len(self.alive) * phases), 1)
        self.queue = [a for _ in range(per_arm) for a in self.alive]
        self.phase.zero_()

    def select(self, x=None, asleep=frozenset()) -> int:
        return self.alive[0] if len(self.alive) == 1 else self.queue[0]

    def observe(self, rewards: dict[int, float], chosen: int, x=None) -> None:
        super().observe(rewards, chosen, x)
        if len(self.alive) == 1 or not self.queue or self.queue[0] != chosen:
            return
        self.queue.pop(0)
        for arm, r in rewards.items():
            if arm in self.alive:
                self.phase[0, arm] += 1
                self.phase[1, arm] += r
        if not self.queue:
            means = self.phase[1] / self.phase[0].clamp_min(1)
            ranked = sorted(self.alive, key=lambda a: (-float(means[a]), a))
            self.alive = ranked[: math.ceil(len(ranked) / 2)]
            self._start_phase()

    def state_dict(self):
        return {
            **super().state_dict(),
            "phase": self.phase.clone(),
            "alive": torch.tensor(self.alive, dtype=torch.int64),
            "queue": torch.tensor(self.queue, dtype=torch.int64),
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.phase.copy_(state["phase"])
        self.alive = [int(a) for a in state["alive"]]
        self.queue = [int(a) for a in state["queue"]]
