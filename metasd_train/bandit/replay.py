"""Offline evaluation on a full-information log: replay each request with a policy choosing per round.

Each request has every arm's logged rounds; a simulated round takes the chosen arm's next logged
round (cycling). The state a real switch would create is not modelled, so this ranks policies
cheaply; the decode benchmark measures them for real.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.policies import FixedArm, Policy


def by_request(rows: list[dict]) -> dict[int, dict]:
    """Rounds grouped by request and arm; each run's last round is dropped (cut short by the length limit)."""
    out: dict[int, dict] = {}
    for r in rows:
        req = out.setdefault(r["request"], {"domain": r["domain"], "features": r["features"], "arms": defaultdict(list)})
        req["arms"][r["arm"]].append(r)
    for req in out.values():
        for arm, logged in req["arms"].items():
            if len(logged) > 1:
                req["arms"][arm] = sorted(logged, key=lambda r: r["round"])[:-1]
    return out


def replay(requests: dict[int, dict], make: Callable[[], Policy], featurizer: Featurizer | None, reward: str,
           budget: int, persist: bool = True) -> dict[str, float]:
    """τ per domain and overall for one policy; `persist` keeps learning across requests."""
    return _tau(*_play(requests, make, featurizer, reward, budget, persist))


def _play(requests, make, featurizer, reward, budget, persist=True):
    policy = make()
    tokens, rounds = defaultdict(int), defaultdict(int)
    for req in requests.values():
        if not persist:
            policy = make()
        x = featurizer(torch.tensor(req["features"]) if req["features"] else None) if (featurizer and policy.contextual) else None
        ptr = defaultdict(int)
        made = 0
        while made < budget:
            arm = policy.select(x)
            logged = req["arms"][arm]
            r = logged[ptr[arm] % len(logged)]
            ptr[arm] += 1
            new = min(r["accepted"] + 1, budget - made)
            made += new
            tokens[req["domain"]] += new
            rounds[req["domain"]] += 1
            if r["drafted"]:
                policy.update(arm, float(r[reward]), x)
    return tokens, rounds


def _tau(tokens: dict, rounds: dict) -> dict[str, float]:
    out = {d: tokens[d] / rounds[d] for d in sorted(tokens)}
    out["all"] = sum(tokens.values()) / max(sum(rounds.values()), 1)
    return out


def fixed_tau(requests: dict[int, dict], arm: int, n_arms: int, budget: int) -> dict[str, float]:
    return replay(requests, lambda: FixedArm(n_arms, arm), None, "efficiency", budget)


def oracle_tau(requests: dict[int, dict], n_arms: int, budget: int) -> dict[str, float]:
    """The per-domain oracle: in each domain, the fixed arm with the best τ there (in hindsight)."""
    plays = [_play(requests, lambda a=a: FixedArm(n_arms, a), None, "efficiency", budget) for a in range(n_arms)]
    tokens, rounds = {}, {}
    for d in plays[0][0]:
        best = max(range(n_arms), key=lambda a: plays[a][0][d] / plays[a][1][d])
        tokens[d], rounds[d] = plays[best][0][d], plays[best][1][d]
    return _tau(tokens, rounds)


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
