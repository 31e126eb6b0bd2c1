"""The base of every arm-selection policy: per-arm statistics, a prior, feedback, state.

Rewards are in [0, 1] (metasd_train/bandit/rewards.py). State is small and lives on the CPU: the
reward of a round reaches the host with the round's one sync anyway, so selecting on the GPU would
only add a second one. It is held in torch tensors (saved with safetensors) and worked on through
NumPy views of the same memory: a torch op on an 8-element CPU tensor costs microseconds of
dispatch, which adds up to percents of a short round.
"""

from __future__ import annotations

import numpy as np
import torch


class Policy:
    """Per-arm counts, reward sums and sums of squares, over a prior that `reset` returns to.

    `observe(rewards, chosen, x)` takes one round's feedback: the chosen arm's reward and, under full
    information, the idle arms' too. `t` counts rounds, the prior's pseudo-rounds included.

    Sleeping arms (Kleinberg et al. 2010): `select(x, asleep)` gets the arms that have nothing to
    propose this round (an n-gram arm without a match) and, where `sleeping` is True, chooses among
    the others, so such an arm is judged only on the rounds it can play. Policies with
    `sleeping = False` (fixed arm, round robin, halving) ignore it.
    """

    contextual = False
    sleeping = False

    def __init__(self, n_arms: int, seed: int = 0):
        self.n_arms, self.seed = n_arms, seed
        self.gen = torch.Generator().manual_seed(seed)
        self.stats = torch.zeros(3, n_arms, dtype=torch.float64)  # counts, sums, sums of squares
        self.prior = torch.zeros(3, n_arms, dtype=torch.float64)  # the same, as pseudo-observations
        self._n, self._s, self._q = self.stats.numpy()  # views: in-place updates reach the tensor
        self.t = 0.0

    @property
    def counts(self) -> torch.Tensor:
        return self.stats[0]

    @property
    def sums(self) -> torch.Tensor:
        return self.stats[1]

    @property
    def means(self) -> torch.Tensor:
        return torch.from_numpy(self._means())

    def _means(self) -> np.ndarray:
        return self._s / np.maximum(self._n, 1e-12)

    def _variances(self) -> np.ndarray:
        m = self._means()
        return np.maximum(self._q / np.maximum(self._n, 1e-12) - m * m, 0.0)

    def select(self, x: torch.Tensor | None = None, asleep: frozenset[int] = frozenset()) -> int:
        raise NotImplementedError

    def note_sleepers(self, arms: frozenset[int]) -> None:
        """The arms that can sit a round out (told at every request, before any round)."""

    def _awake(self, asleep: frozenset[int]) -> np.ndarray | None:
        """Bool mask of the arms that may be chosen this round; None when every arm may (or none is awake)."""
        if not asleep or len(asleep) >= self.n_arms:
            return None
        mask = np.ones(self.n_arms, dtype=bool)
        mask[list(asleep)] = False
        return mask

    def observe(self, rewards: dict[int, float], chosen: int, x: torch.Tensor | None = None) -> None:
        """One round: `rewards` maps arms to rewards (the chosen arm, plus idle arms under full information)."""
        for arm, r in rewards.items():
            self._n[arm] += 1
            self._s[arm] += r
            self._q[arm] += r * r
        self.t += 1

    def update(self, arm: int, reward: float, x: torch.Tensor | None = None) -> None:
        """Bandit feedback for one round: only the chosen arm's reward."""
        self.observe({arm: reward}, arm, x)

    def set_prior(self, counts: torch.Tensor, sums: torch.Tensor, sumsq: torch.Tensor | None = None) -> None:
        """Pseudo-observations per arm (a warm start); the policy restarts from them now and on every reset."""
        self.prior[0], self.prior[1] = counts, sums
        self.prior[2] = sumsq if sumsq is not None else sums * sums / counts.clamp_min(1e-12)
        self.reset()

    def reset(self) -> None:
        """Back to the prior: forget every online observation (paper mode does this per request)."""
        self.stats.copy_(self.prior)
        self.t = float(self.prior[0].sum())

    def _untried(self) -> int | None:
        untried = np.flatnonzero(self._n <= 0)
        return int(untried[0]) if len(untried) else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "stats": self.stats.clone(),
            "prior": self.prior.clone(),
            "t": torch.tensor(self.t, dtype=torch.float64),
            "rng": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats.copy_(state["stats"])
        self.prior.copy_(state["prior"])
        self.t = float(state["t"])
        self.gen.set_state(state["rng"].to(torch.uint8))
