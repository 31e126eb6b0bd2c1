"""Context for the contextual bandit, from the target itself at no extra model cost."""

from __future__ import annotations

import torch


class Featurizer:
    """x = [1, P h / |h|]: a fixed seeded Gaussian projection of the prompt's mean hidden state."""

    def __init__(self, hidden_size: int, dim: int = 16, seed: int = 0):
        self.hidden_size, self.dim, self.seed = hidden_size, dim, seed
        gen = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(dim - 1, hidden_size, generator=gen, dtype=torch.float64) / (dim - 1) ** 0.5

    def __call__(self, features: torch.Tensor | None) -> torch.Tensor:
        # features: [H] | None -> [dim]
        x = torch.zeros(self.dim, dtype=torch.float64)
        x[0] = 1.0
        if features is not None:
            h = features.double()
            x[1:] = self.proj @ (h / h.norm().clamp_min(1e-12))
        return x
