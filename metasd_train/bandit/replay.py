"""Offline evaluation on an exact full-information log (metasd_train/data/acceptance_log.py).

The log holds, for each request, arm and start position, the round that arm would have had. A
replay walks each request from position 0: the policy picks an arm, the round's accepted tokens
plus one advance the position. For greedy decoding this reproduces the engine's rounds exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.policies import FixedArm, Policy


def by_request(rows: list[dict]) -> dict[int, dict]:
    """{request: {domain, features, length, arms: {arm: {position: row}}}}."""
    out: dict[int, dict] = {}
    for r in rows:
        req = out.setdefault(
            r["request"], {"domain": r["domain"], "features": r["features"], "length": 0, "arms": defaultdict(dict)}
        )
        req["arms"][r["arm"]][r["round"]] = r
        req["length"] = max(req["length"], r["round"] + 1)
    return out


def play(
    requests: dict[int, dict],
    make: Callable[[], Policy],
    featurizer: Featurizer | None = None,
    reward: str = "divergence",
    persist: bool = True,
    choose: Callable[[dict], int] | None = None,
):
    """(tokens, rounds) per domain; `persist` keeps learning across requests; `choose` overrides the policy."""
    policy = make()
    tokens, rounds = defaultdict(int), defaultdict(int)
    for req in requests.values():
        if not persist:
            policy = make()
        x = None
        if featurizer is not None and policy.contextual:
            x = featurizer(torch.tensor(req["features"]) if req["features"] else None)
        t = 0
        while t < req["length"]:
            arm = choose(req) if choose else policy.select(x)
            r = req["arms"][arm][t]
            t += r["accepted"] + 1
            tokens[req["domain"]] += r["accepted"] + 1
            rounds[req["domain"]] += 1
            if t - r["accepted"] - 1 < req["length"] - 1 and not choose:  # could draft (as in the engine)
                policy.update(arm, float(r[reward]), x)
    return tokens, rounds


def tau(tokens: dict, rounds: dict) -> dict[str, float]:
    out = {d: tokens[d] / rounds[d] for d in sorted(tokens)}
    out["all"] = sum(tokens.values()) / max(sum(rounds.values()), 1)
    return out


def replay(requests, make, featurizer=None, reward="divergence", persist=True) -> dict[str, float]:
    return tau(*play(requests, make, featurizer, reward, persist))


def fixed_tau(requests: dict[int, dict], arm: int, n_arms: int) -> dict[str, float]:
    return replay(requests, lambda: FixedArm(n_arms, arm))


def oracle_tau(requests: dict[int, dict], n_arms: int) -> dict[str, float]:
    """The per-domain oracle: in each domain, the fixed arm with the best τ there (in hindsight)."""
    per_arm = [fixed_tau(requests, a, n_arms) for a in range(n_arms)]
    best = {d: max(range(n_arms), key=lambda a: per_arm[a][d]) for d in per_arm[0] if d != "all"}
    return tau(*play(requests, lambda: FixedArm(n_arms), choose=lambda req: best[req["domain"]]))


def separation(rows: list[dict], reward: str) -> dict[str, float]:
    """Per domain: variance of arm means over mean within-arm variance (higher separates arms better)."""
    out = {}
    for domain in sorted({r["domain"] for r in rows}):
        groups = defaultdict(list)
        for r in rows:
            if r["domain"] == domain and r["drafted"]:
                groups[r["arm"]].append(float(r[reward]))
        means = torch.tensor([sum(v) / len(v) for v in groups.values()])
        within = torch.tensor([torch.tensor(v).var().item() if len(v) > 1 else 0.0 for v in groups.values()]).mean()
        out[domain] = float(means.var() / within.clamp_min(1e-9)) if len(means) > 1 else 0.0
    return out
