"""How many of a lookup's tokens to propose: the length that buys the most tokens per second.

A prompt-lookup proposal is cheap to make but not to verify where a wider verify costs more (a
target on a CPU: one token ≈ 40 ms, five ≈ 65 ms for SmolLM2 on 2 cores). `AcceptanceByMatch`
learns, online and per length of the trailing match that found the proposal, how often its i-th
token is the one that follows; `best_length` then picks k maximising (1 + expected accepted of
k) / (verify seconds at width k + 1), 0 meaning "propose nothing, let the target step". Verification
is unchanged, so the output is too.
"""

from __future__ import annotations

PRIOR = (1.0, 1.0)  # Beta pseudo-counts (accepted, rejected) of every position: 0.5 before any evidence


class AcceptanceByMatch:
    """Counts, per match length n and position i, how often token i of a proposal was the committed
    one given tokens before it were. The committed tokens are the target's (greedy: its argmax;
    sampling: its draw, whose chance of being d is p(d), the acceptance chance of a one-hot d)."""

    def __init__(self):
        self.counts: dict[tuple[int, int], list[float]] = {}  # (n, i) -> [accepted, offered]

    def update(self, proposal: list[int], n: int, committed: list[int]) -> None:
        for i, (a, b) in enumerate(zip(proposal, committed)):
            c = self.counts.setdefault((n, i), [0.0, 0.0])
            c[1] += 1
            if a != b:
                return
            c[0] += 1

    def rate(self, n: int, i: int) -> float:
        accepted, offered = self.counts.get((n, i), (0.0, 0.0))
        return (accepted + PRIOR[0]) / (offered + PRIOR[0] + PRIOR[1])

    def expected_accepted(self, n: int, k: int) -> list[float]:
        """[E accepted of a k'-token proposal for k' = 0..k]."""
        out, run, total = [0.0], 1.0, 0.0
        for i in range(k):
            run *= self.rate(n, i)
            total += run
            out.append(total)
        return out


def best_length(expected: list[float], width_seconds: dict[int, float]) -> int:
    """argmax over k of (1 + expected[k]) / width_seconds[k + 1]; the longest where costs are unknown."""
    k_max = len(expected) - 1
    if any(k + 1 not in width_seconds for k in range(k_max + 1)):
        return k_max
    rates = [(1 + expected[k]) / width_seconds[k + 1] for k in range(k_max + 1)]
    return max(range(k_max + 1), key=lambda k: (rates[k], k))
