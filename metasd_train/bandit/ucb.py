"""Index policies: MetaSD-UCB as the paper defines it, and variance-aware UCB with arm elimination."""

from __future__ import annotations

import math

import numpy as np
import torch

from metasd_train.bandit.policy import Policy


class UCB(Policy):
    """MetaSD-UCB: every arm once, then argmax of mean + beta * sqrt(2 ln t / n).

    Counts and t include the warm start's pseudo-observations, so a prior both shifts the means and
    narrows the bonus.
    """

    def __init__(self, n_arms: int, beta: float = 1.0, seed: int = 0):
        super().__init__(n_arms, seed)
        self.beta = beta

    def select(self, x=None) -> int:
        if (arm := self._untried()) is not None:
            return arm
        bonus = self.beta * np.sqrt(2 * math.log(max(self.t, 1.0)) / self._n)
        return int(np.argmax(self._means() + bonus))


class EliminationUCB(Policy):
    """Variance-aware UCB (UCB-V, Audibert et al. 2009) that stops exploring arms it has ruled out.

    Bounds: mean ± beta * (sqrt(2 v ln t / n) + c ln t / n), v the arm's empirical variance (floored).
    Speed rewards spread over a small part of [0, 1], so a variance-aware width ends exploration
    after a few rounds where MetaSD-UCB's sqrt(2 ln t / n) keeps exploring for hundreds.
    An arm whose upper bound falls below the best lower bound is eliminated for good: it is not
    re-explored as ln t grows. Eliminated arms come back on `reset` (a new request in paper mode) or
    on a detected shift: a one-sided CUSUM on each observed arm's standardised reward drop,
    (mean - r) / std, less `shift_delta` per round, alarming at `shift_threshold` (0: off); with the
    defaults a sustained drop of one standard deviation alarms after about 20 rounds. On a shift the policy
    keeps what it knew but shrinks it to `shift_memory` observations per arm, so new data rules soon.
    """

    def __init__(
        self,
        n_arms: int,
        beta: float = 1.0,
        c: float = 0.1,
        var_floor: float = 1e-3,
        min_count: int = 2,
        shift_delta: float = 0.5,
        shift_threshold: float = 10.0,
        shift_memory: float = 100.0,
        seed: int = 0,
    ):
        super().__init__(n_arms, seed)
        self.beta, self.c, self.var_floor, self.min_count = beta, c, var_floor, min_count
        self.shift_delta, self.shift_threshold, self.shift_memory = shift_delta, shift_threshold, shift_memory
        self.alive = torch.ones(n_arms, dtype=torch.float64)
        self.cusum = torch.zeros(n_arms, dtype=torch.float64)
        self._alive, self._g = self.alive.numpy(), self.cusum.numpy()
        self.shifts = 0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) confidence bounds per arm; arms never observed get (-inf, inf)."""
        n = np.maximum(self._n, 1e-12)
        mean = self._s / n
        v = np.maximum(self._q / n - mean * mean, self.var_floor)
        log_t = math.log(max(self.t, 2.0))
        width = self.beta * (np.sqrt(2 * log_t * v / n) + self.c * log_t / n)
        width[self._n <= 0] = np.inf
        return mean - width, mean + width

    def select(self, x=None) -> int:
        alive = self._alive > 0
        untried = alive & (self._n <= 0)
        if untried.any():
            return int(np.argmax(untried))
        lo, hi = self.bounds()
        out = alive & (hi < np.max(np.where(alive, lo, -np.inf))) & (self._n >= self.min_count)
        if out.any():
            self._alive[out] = 0.0
            alive &= ~out
        return int(np.argmax(np.where(alive, hi, -np.inf)))

    def observe(self, rewards: dict[int, float], chosen: int, x=None) -> None:
        shift = False
        if self.shift_threshold > 0:
            for arm, r in rewards.items():
                n = self._n[arm]
                if n >= self.min_count:
                    mean = self._s[arm] / n
                    std = max(self._q[arm] / n - mean * mean, self.var_floor) ** 0.5
                    g = max(0.0, self._g[arm] + (mean - r) / std - self.shift_delta)
                    self._g[arm] = g
                    shift |= g > self.shift_threshold and self._alive[arm] > 0
        super().observe(rewards, chosen, x)
        if shift:
            self._forget()
            self.shifts += 1

    def _forget(self) -> None:
        """After a shift: every arm back in play, statistics shrunk to `shift_memory` observations each."""
        scale = (self.shift_memory / self.stats[0].clamp_min(self.shift_memory)).clamp_max(1.0)
        self.stats.mul_(scale)
        self.t = float(self.stats[0].sum())
        self.alive.fill_(1.0)
        self.cusum.zero_()

    def reset(self) -> None:
        super().reset()
        self.alive.fill_(1.0)
        self.cusum.zero_()

    def state_dict(self):
        return {**super().state_dict(), "alive": self.alive.clone(), "cusum": self.cusum.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.alive.copy_(state["alive"])
        self.cusum.copy_(state["cusum"])
