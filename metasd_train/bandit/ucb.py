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

    sleeping = True

    def select(self, x=None, asleep=frozenset()) -> int:
        awake = self._awake(asleep)
        untried = self._n <= 0 if awake is None else (self._n <= 0) & awake
        if untried.any():
            return int(np.argmax(untried))
        bonus = self.beta * np.sqrt(2 * math.log(max(self.t, 1.0)) / np.maximum(self._n, 1e-12))
        index = self._means() + bonus
        return int(np.argmax(index if awake is None else np.where(awake, index, -np.inf)))


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
        self.sleepers: set[int] = set()  # arms that can sleep (told per request; kept: a property of the arm)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) confidence bounds per arm; arms never observed get (-inf, inf)."""
        n, sums, sq = self._n.tolist(), self._s.tolist(), self._q.tolist()
        lo, hi = zip(*(self._bound(n[a], sums[a], sq[a], math.log(max(self.t, 2.0))) for a in range(self.n_arms)))
        return np.array(lo), np.array(hi)

    def note_sleepers(self, arms: frozenset[int]) -> None:
        self.sleepers.update(arms)

    def _bound(self, n: float, s: float, q: float, log_t: float) -> tuple[float, float]:
        # plain floats: a round's selection is a few scalar operations per live arm, cheaper than NumPy calls
        if n <= 0:
            return -math.inf, math.inf
        mean = s / n
        v = max(q / n - mean * mean, self.var_floor)
        width = self.beta * (math.sqrt(2 * log_t * v / n) + self.c * log_t / n)
        return mean - width, mean + width

    def select(self, x=None, asleep=frozenset()) -> int:
        """The awake, live arm with the highest upper bound, after eliminating ruled-out arms.

        Only arms that never sleep set the elimination bar: an arm judged on the rounds it can play
        (an n-gram with a match) must not rule out the arms that play the rounds it cannot.
        """
        self.sleepers.update(asleep)
        live = [a for a in range(self.n_arms) if self._alive[a] > 0]
        awake = [a for a in live if a not in asleep]
        if not awake:  # every live arm is asleep: the best awake arm, eliminated or not
            live = awake = [a for a in range(self.n_arms) if a not in asleep] or list(range(self.n_arms))
        n, sums, sq = self._n.tolist(), self._s.tolist(), self._q.tolist()
        for a in awake:
            if n[a] <= 0:
                return a
        log_t = math.log(max(self.t, 2.0))
        b = {a: self._bound(n[a], sums[a], sq[a], log_t) for a in live}
        bar = max((b[a][0] for a in live if a not in self.sleepers), default=-math.inf)
        out = [a for a in live if b[a][1] < bar and n[a] >= self.min_count and self._alive[a] > 0]
        for a in out:
            self._alive[a] = 0.0
        pool = [a for a in awake if a not in out] or awake
        return max(pool, key=lambda a: b[a][1])

    sleeping = True

    def observe(self, rewards: dict[int, float], chosen: int, x=None) -> None:
        shift = False
        if self.shift_threshold > 0:
            for arm, r in rewards.items():
                n = float(self._n[arm])
                if n >= self.min_count:
                    mean = float(self._s[arm]) / n
                    std = max(float(self._q[arm]) / n - mean * mean, self.var_floor) ** 0.5
                    g = max(0.0, float(self._g[arm]) + (mean - r) / std - self.shift_delta)
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
