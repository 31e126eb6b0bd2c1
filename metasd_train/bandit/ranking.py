"""How well each reward ranks arms against their measured speed, from the acceptance log.

For each reward, per domain: the Spearman correlation between each arm's mean on-policy reward
(bandit/warmstart.py's per-(request, arm) statistics) and its replayed tokens/s with that arm fixed.
A reward that ranks arms as tokens/s does (rho = 1) leads a bandit to the fastest arm.
"""

from __future__ import annotations

from collections import defaultdict

from metasd_train.bandit.replay import fixed
from metasd_train.bandit.rewards import REWARDS
from metasd_train.bandit.warmstart import ArmRounds, on_policy


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho (Pearson on ranks); 0 where either side is constant or has < 2 values."""
    if len(a) < 2:
        return 0.0
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5 if va > 0 and vb > 0 else 0.0


def arm_means(stats: list[ArmRounds], requests: dict[int, dict], n_arms: int) -> dict[str, list[float]]:
    """{domain and 'all': per-arm mean on-policy reward}."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * n_arms)
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * n_arms)
    for s in stats:
        for d in (requests[s.request]["domain"], "all"):
            sums[d][s.arm] += s.sum
            counts[d][s.arm] += s.n
    return {d: [x / max(n, 1) for x, n in zip(sums[d], counts[d])] for d in sums}


def reward_ranking(requests: dict[int, dict], n_arms: int) -> dict[str, dict[str, float]]:
    """{reward: {domain and 'all': Spearman(per-arm mean reward, per-arm replayed tokens/s)}}."""
    speeds = [fixed(requests, a, n_arms) for a in range(n_arms)]
    out = {}
    for name in REWARDS:
        means = arm_means(on_policy(requests, n_arms, name), requests, n_arms)
        out[name] = {d: spearman(m, [s[d]["tokens_per_s"] for s in speeds]) for d, m in sorted(means.items())}
    return out


def separation(stats: list[ArmRounds], requests: dict[int, dict], n_arms: int) -> dict[str, float]:
    """Per domain: variance of per-arm mean rewards over the mean within-arm variance (higher separates better)."""
    acc: dict[str, list[list[float]]] = defaultdict(lambda: [[0.0, 0.0, 0.0] for _ in range(n_arms)])
    for s in stats:
        cell = acc[requests[s.request]["domain"]][s.arm]
        cell[0], cell[1], cell[2] = cell[0] + s.n, cell[1] + s.sum, cell[2] + s.sumsq
    out = {}
    for d, cells in sorted(acc.items()):
        live = [(n, sm / n, max(sq / n - (sm / n) ** 2, 0.0)) for n, sm, sq in cells if n > 0]
        if len(live) < 2:
            out[d] = 0.0
            continue
        means = [m for _, m, _ in live]
        grand = sum(means) / len(means)
        between = sum((m - grand) ** 2 for m in means) / (len(means) - 1)
        within = sum(v for _, _, v in live) / len(live)
        out[d] = between / max(within, 1e-9)
    return out
