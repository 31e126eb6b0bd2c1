"""Arm-selection policies over K drafters: select(x) -> arm, update(arm, reward, x).

Rewards are assumed in [0, 1] (block divergence, block efficiency and the throughput reward all
are). State is small and lives on the CPU: the reward of a round reaches the host with the round's
one sync anyway, so selecting on the GPU would only add a second one. The state is held in torch
tensors (saved with safetensors) and worked on per round through NumPy views of the same memory:
a torch op on an 8-element CPU tensor costs microseconds of dispatch, which added up to 7% of a
round on an H100.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class Policy:
    """Base: per-arm counts and reward sums; subclasses pick."""

    contextual = False

    def __init__(self, n_arms: int, seed: int = 0):
        self.n_arms, self.seed = n_arms, seed
        self.gen = torch.Generator().manual_seed(seed)
        self.counts = torch.zeros(n_arms, dtype=torch.float64)
        self.sums = torch.zeros(n_arms, dtype=torch.float64)
        self._n, self._s = self.counts.numpy(), self.sums.numpy()  # views: in-place updates reach both
        self.t = 0

    @property
    def means(self) -> torch.Tensor:
        return torch.from_numpy(self._means())

    def _means(self) -> np.ndarray:
        return self._s / np.maximum(self._n, 1)

    def select(self, x: torch.Tensor | None = None) -> int:
        raise NotImplementedError

    def update(self, arm: int, reward: float, x: torch.Tensor | None = None) -> None:
        self._n[arm] += 1
        self._s[arm] += reward
        self.t += 1

    def reset(self) -> None:
        """Forget online statistics (per-request exploration); contextual models keep their fit."""
        self.counts.zero_()
        self.sums.zero_()
        self.t = 0

    def _untried(self) -> int | None:
        untried = np.flatnonzero(self._n == 0)
        return int(untried[0]) if len(untried) else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts.clone(), "sums": self.sums.clone(), "t": torch.tensor(self.t)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.counts.copy_(state["counts"])
        self.sums.copy_(state["sums"])
        self.t = int(state["t"])


class FixedArm(Policy):
    def __init__(self, n_arms: int, arm: int = 0, seed: int = 0):
        super().__init__(n_arms, seed)
        self.arm = arm

    def select(self, x=None) -> int:
        return self.arm


class RoundRobin(Policy):
    def select(self, x=None) -> int:
        return self.t % self.n_arms


class RandomArm(Policy):
    def select(self, x=None) -> int:
        return int(torch.randint(self.n_arms, (1,), generator=self.gen))


class UCB(Policy):
    """MetaSD-UCB: every arm once, then argmax of mean + beta * sqrt(2 ln t / n)."""

    def __init__(self, n_arms: int, beta: float = 1.0, seed: int = 0):
        super().__init__(n_arms, seed)
        self.beta = beta

    def select(self, x=None) -> int:
        if (arm := self._untried()) is not None:
            return arm
        bonus = self.beta * np.sqrt(2 * math.log(max(self.t, 1)) / self._n)
        return int(np.argmax(self._means() + bonus))


class Thompson(Policy):
    """Gaussian Thompson sampling: draw each arm's mean from N(mean, sigma^2 / (n + 1))."""

    def __init__(self, n_arms: int, sigma: float = 0.5, seed: int = 0):
        super().__init__(n_arms, seed)
        self.sigma = sigma

    def select(self, x=None) -> int:
        std = self.sigma / torch.sqrt(self.counts + 1)
        draw = self.means + std * torch.randn(self.n_arms, generator=self.gen, dtype=torch.float64)
        return int(torch.argmax(draw))


class EXP3(Policy):
    """EXP3 (Auer et al. 2002): exponential weights on importance-weighted rewards, gamma exploration.

    `share` > 0 mixes that fraction of the weight back to uniform after every update (EXP3.S /
    fixed share), so an arm that was bad for a long stretch can win again after a switch.
    """

    def __init__(self, n_arms: int, gamma: float = 0.1, share: float = 0.0, seed: int = 0):
        super().__init__(n_arms, seed)
        self.gamma, self.share = gamma, share
        self.log_w = torch.zeros(n_arms, dtype=torch.float64)
        self._lw = self.log_w.numpy()
        self._probs = np.full(n_arms, 1 / n_arms)

    def probs(self) -> np.ndarray:
        w = np.exp(self._lw - self._lw.max())
        return (1 - self.gamma) * w / w.sum() + self.gamma / self.n_arms

    def select(self, x=None) -> int:
        self._probs = self.probs()
        u = float(torch.rand((), generator=self.gen, dtype=torch.float64))
        return min(int(np.searchsorted(np.cumsum(self._probs), u, side="right")), self.n_arms - 1)

    def update(self, arm: int, reward: float, x=None) -> None:
        super().update(arm, reward, x)
        self._lw[arm] += self.gamma * reward / (self._probs[arm] * self.n_arms)
        if self.share > 0:
            w = np.exp(self._lw - self._lw.max())
            self._lw[:] = np.log((1 - self.share) * w / w.sum() + self.share / self.n_arms)

    def reset(self) -> None:
        super().reset()
        self.log_w.zero_()

    def state_dict(self):
        return {**super().state_dict(), "log_w": self.log_w.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.log_w.copy_(state["log_w"])


class SequentialHalving(Policy):
    """Sequential Halving (Karnin et al. 2013) over a budget of rounds, then the survivor for good."""

    def __init__(self, n_arms: int, budget: int = 64, seed: int = 0):
        super().__init__(n_arms, seed)
        self.budget = budget
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.alive = list(range(self.n_arms))
        self._phase_sums = torch.zeros(self.n_arms, dtype=torch.float64)
        self._phase_counts = torch.zeros(self.n_arms, dtype=torch.float64)
        self._start_phase()

    def _start_phase(self) -> None:
        phases = max(math.ceil(math.log2(self.n_arms)), 1)
        per_arm = max(self.budget // (len(self.alive) * phases), 1)
        self._queue = [a for _ in range(per_arm) for a in self.alive]
        self._phase_sums.zero_()
        self._phase_counts.zero_()

    def select(self, x=None) -> int:
        if len(self.alive) == 1:
            return self.alive[0]
        return self._queue[0]

    def update(self, arm: int, reward: float, x=None) -> None:
        super().update(arm, reward, x)
        if len(self.alive) == 1 or not self._queue or self._queue[0] != arm:
            return
        self._queue.pop(0)
        self._phase_sums[arm] += reward
        self._phase_counts[arm] += 1
        if not self._queue:
            means = self._phase_sums / self._phase_counts.clamp_min(1)
            ranked = sorted(self.alive, key=lambda a: -float(means[a]))
            self.alive = ranked[: max(len(ranked) // 2, 1)]
            self._start_phase()


class LinUCB(Policy):
    """Disjoint LinUCB (Li et al. 2010): a ridge model per arm, inverse kept by Sherman-Morrison.

    The context is fixed for a request, so the arms' scores are cached for the last context seen
    (by identity: pass a new tensor for a new context) and an update rescores only its own arm.
    """

    contextual = True

    def __init__(self, n_arms: int, dim: int, beta: float = 1.0, ridge: float = 1.0, seed: int = 0):
        super().__init__(n_arms, seed)
        self.dim, self.beta, self.ridge = dim, beta, ridge
        self.A_inv = torch.eye(dim, dtype=torch.float64).repeat(n_arms, 1, 1) / ridge  # [K, d, d]
        self.b = torch.zeros(n_arms, dim, dtype=torch.float64)  # [K, d]
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

    def select(self, x=None) -> int:
        if self._scores is None or x is not self._key:
            self._key, self._xn = x, self._numpy(x)
            self._scores = self._score(self._xn)
        return int(np.argmax(self._scores))

    def update(self, arm: int, reward: float, x=None, weight: float = 1.0) -> None:
        super().update(arm, reward, x)
        xn = self._xn if (x is self._key and self._xn is not None) else self._numpy(x)
        Ax = self._A[arm] @ xn
        self._A[arm] -= weight * np.outer(Ax, Ax) / (1 + weight * xn @ Ax)
        self._b[arm] += weight * reward * xn
        if self._scores is not None and x is self._key:
            self._scores[arm] = self._score(xn, arm)
        else:
            self._scores = None

    def fit(self, xs: torch.Tensor, arms: torch.Tensor, rewards: torch.Tensor, weight: float = 1.0) -> None:
        """Warm start from logged rows: A_k = ridge*I + w * sum x x^T, b_k = w * sum r x (exact, batched)."""
        # xs: [N, d], arms: [N], rewards: [N]
        xs, rewards = xs.double(), rewards.double()
        for k in range(self.n_arms):
            sel = arms == k
            X, r = xs[sel], rewards[sel]
            A = torch.linalg.inv(self.A_inv[k]) + weight * X.T @ X
            self.A_inv[k] = torch.linalg.inv(A)
            self.b[k] += weight * X.T @ r
        self._scores = None

    def _numpy(self, x) -> np.ndarray:
        return self._default if x is None else x.detach().double().cpu().numpy()

    def reset(self) -> None:
        """The fitted model persists across requests; only the counters are per-request."""
        super().reset()

    def state_dict(self):
        return {**super().state_dict(), "A_inv": self.A_inv.clone(), "b": self.b.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.A_inv.copy_(state["A_inv"])
        self.b.copy_(state["b"])
        self._scores = None


POLICIES = {
    "ucb": UCB,
    "exp3": EXP3,
    "seqhalving": SequentialHalving,
    "thompson": Thompson,
    "random": RandomArm,
    "fixed": FixedArm,
    "round_robin": RoundRobin,
    "linucb": LinUCB,
}


def make_policy(name: str, n_arms: int, cfg=None, dim: int = 16, fixed_arm: int = 0) -> Policy:
    """Build a policy from a BanditConfig-like mapping."""
    cfg = cfg or {}
    seed, beta = int(cfg.get("seed", 0)), float(cfg.get("beta", 1.0))
    if name == "ucb":
        return UCB(n_arms, beta=beta, seed=seed)
    if name == "exp3":
        return EXP3(n_arms, gamma=float(cfg.get("exp3_gamma", 0.1)), share=float(cfg.get("exp3_share", 0.0)), seed=seed)
    if name == "seqhalving":
        return SequentialHalving(n_arms, budget=int(cfg.get("budget", 64)), seed=seed)
    if name == "linucb":
        return LinUCB(n_arms, dim=dim, beta=beta, ridge=float(cfg.get("ridge", 1.0)), seed=seed)
    if name == "fixed":
        return FixedArm(n_arms, arm=fixed_arm, seed=seed)
    return POLICIES[name](n_arms, seed=seed)
