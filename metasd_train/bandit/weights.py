"""Exponential-weights policies: EXP3 (bandit feedback, as MetaSD uses it) and Hedge (full information)."""

from __future__ import annotations

import numpy as np
import torch

from metasd_train.bandit.policy import Policy


class _Weights(Policy):
    """Log-weights with optional fixed share; a prior enters as `rate` * mean * its mean pseudo-count."""

    def __init__(self, n_arms: int, rate: float, share: float = 0.0, seed: int = 0):
        super().__init__(n_arms, seed)
        self.rate, self.share = rate, share
        self.log_w = torch.zeros(n_arms, dtype=torch.float64)
        self._lw = self.log_w.numpy()
        self._probs = np.full(n_arms, 1 / n_arms)

    def probs(self) -> np.ndarray:
        w = np.exp(self._lw - self._lw.max())
        return w / w.sum()

    sleeping = True

    def select(self, x=None, asleep=frozenset()) -> int:
        """Draw from the weights renormalised over the awake arms (sleeping experts)."""
        probs = self.probs()
        if (awake := self._awake(asleep)) is not None:
            probs = np.where(awake, probs, 0.0)
            total = probs.sum()
            probs = probs / total if total > 0 else awake / awake.sum()
        self._probs = probs
        u = float(torch.rand((), generator=self.gen, dtype=torch.float64))
        return min(int(np.searchsorted(np.cumsum(self._probs), u, side="right")), self.n_arms - 1)

    def observe(self, rewards: dict[int, float], chosen: int, x=None) -> None:
        """Full information (every arm reported) updates each arm as is; otherwise the chosen arm's
        reward is importance-weighted by its probability (idle arms that were reported are not)."""
        super().observe(rewards, chosen, x)
        full = len(rewards) == self.n_arms
        for arm, r in rewards.items():
            estimate = r if (full or arm != chosen) else r / max(self._probs[arm], 1e-12)
            self._lw[arm] += self.rate * estimate
        if self.share > 0:
            w = np.exp(self._lw - self._lw.max())
            self._lw[:] = np.log((1 - self.share) * w / w.sum() + self.share / self.n_arms)

    def reset(self) -> None:
        super().reset()
        n = self.prior[0]
        self.log_w.copy_(self.rate * self.prior[1] / n.clamp_min(1e-12) * n.mean())
        self._probs = self.probs()

    def state_dict(self):
        return {**super().state_dict(), "log_w": self.log_w.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.log_w.copy_(state["log_w"])
        self._probs = self.probs()


class EXP3(_Weights):
    """EXP3 (Auer et al. 2002): weights on (importance-weighted) rewards, gamma uniform exploration.

    Under full feedback every arm is updated without importance weights, as MetaSD defines it.
    `share` > 0 mixes that fraction of the weight back to uniform after every update (EXP3.S /
    fixed share), so an arm that was bad for a long stretch can win again after a switch.
    """

    def __init__(self, n_arms: int, gamma: float = 0.1, share: float = 0.0, seed: int = 0):
        super().__init__(n_arms, gamma / n_arms, share, seed)
        self.gamma = gamma

    def probs(self) -> np.ndarray:
        return (1 - self.gamma) * super().probs() + self.gamma / self.n_arms


class Hedge(_Weights):
    """Hedge / exponential weights for full information (HedgeSpec): no exploration of its own.

    Every arm's reward arrives every round (feedback=full), so there is nothing to explore: the
    weights follow cumulative reward at learning rate `eta`, and fixed `share` lets them follow a
    switch. Under bandit feedback it importance-weights the chosen arm (EXP3 without the gamma floor).
    """

    def __init__(self, n_arms: int, eta: float = 10.0, share: float = 0.01, seed: int = 0):
        super().__init__(n_arms, eta, share, seed)
