"""Disjoint LinUCB (Li et al. 2010) over prompt features (metasd_train/bandit/context.py)."""

from __future__ import annotations

import numpy as np
import torch

from metasd_train.bandit.policy import Policy


class LinUCB(Policy):
    """A ridge model per arm, inverse kept by Sherman-Morrison; `fit` is its warm start and `reset` returns to it.

    The context is fixed for a request, so the arms' scores are cached for the last context seen
    (by identity: pass a new tensor for a new context) and an update rescores only its own arm.
    """

    contextual = True
    sleeping = True

    def __init__(self, n_arms: int, dim: int, beta: float = 1.0, ridge: float = 1.0, seed: int = 0):
        super().__init__(n_arms, seed)
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        self.dim, self.beta, self.ridge = dim, beta, ridge
        self.A_inv = torch.eye(dim, dtype=torch.float64).repeat(n_arms, 1, 1) / ridge  # [K, d, d]
        self.b = torch.zeros(n_arms, dim, dtype=torch.float64)  # [K, d]
        self.prior_A_inv, self.prior_b = self.A_inv.clone(), self.b.clone()
        self._A, self._b = self.A_inv.numpy(), self.b.numpy()
        self._default = np.eye(1, dim).ravel()  # the context when there is none: a bias feature
        self._key, self._xn, self._scores = None, None, None

    def scores(self, x: torch.Tensor | None) -> torch.Tensor:
        # x: [d] -> [K]
        return torch.from_numpy(self._score(self._numpy(x)))

    def _score(self, xn: np.ndarray, arm: int | slice = slice(None)) -> np.ndarray:
        A, b = self._A[arm], self._b[arm]
        theta_x = np.einsum("...ij,...j,i->...", A, b, xn)
        width = np.sqrt(np.maximum(np.einsum("i,...ij,j->...", xn, A, xn), 0.0))
        return theta_x + self.beta * width

    def select(self, x=None, asleep=frozenset()) -> int:
        if self._scores is None or x is not self._key:
            self._key, self._xn = x, self._numpy(x)
            self._scores = self._score(self._xn)
        if (awake := self._awake(asleep)) is not None:
            return int(np.argmax(np.where(awake, self._scores, -np.inf)))
        return int(np.argmax(self._scores))

    def observe(self, rewards: dict[int, float], chosen: int, x=None, weight: float = 1.0) -> None:
        super().observe(rewards, chosen, x)
        xn = self._xn if (x is self._key and self._xn is not None) else self._numpy(x)
        for arm, r in rewards.items():
            Ax = self._A[arm] @ xn
            self._A[arm] -= weight * np.outer(Ax, Ax) / (1 + weight * xn @ Ax)
            self._b[arm] += weight * r * xn
            if self._scores is not None and x is self._key:
                self._scores[arm] = self._score(xn, arm)
        if x is not self._key:
            self._scores = None

    def fit(self, xs: torch.Tensor, arms: torch.Tensor, rewards: torch.Tensor, weights: torch.Tensor | float = 1.0):
        """Warm start: A_k = ridge*I + sum w x x^T, b_k = sum w r x over arm k's rows; becomes the prior."""
        # xs: [N, d], arms: [N], rewards: [N], weights: [N] or a scalar
        xs, rewards = xs.double(), rewards.double()
        w = torch.as_tensor(weights, dtype=torch.float64).expand(len(rewards))
        for k in range(self.n_arms):
            sel = arms == k
            X, r, wk = xs[sel], rewards[sel], w[sel]
            A = torch.linalg.inv(self.A_inv[k]) + (X * wk[:, None]).T @ X
            self.A_inv[k] = torch.linalg.inv(A)
            self.b[k] += X.T @ (wk * r)
        self.prior_A_inv.copy_(self.A_inv)
        self.prior_b.copy_(self.b)
        self._scores = None

    def _numpy(self, x) -> np.ndarray:
        return self._default if x is None else x.detach().double().cpu().numpy()

    def reset(self) -> None:
        super().reset()
        if hasattr(self, "prior_A_inv"):
            self.A_inv.copy_(self.prior_A_inv)
            self.b.copy_(self.prior_b)
        self._scores = None

    def state_dict(self):
        extra = {"A_inv": self.A_inv, "b": self.b, "prior_A_inv": self.prior_A_inv, "prior_b": self.prior_b}
        return {**super().state_dict(), **{k: v.clone() for k, v in extra.items()}}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for k in ("A_inv", "b", "prior_A_inv", "prior_b"):
            getattr(self, k).copy_(state[k])
        self._scores = None
