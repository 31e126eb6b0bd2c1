"""Offline evaluation on an exact full-information log (metasd_train/data/acceptance_log.py).

The log holds, for each request, arm and start position, the round that arm would have had there.
A replay walks each request from position 0: the chooser picks an arm, the logged round becomes the
engine's RoundRecord (`record_of`), the chooser scores it with the same reward functions as in the
engine, and accepted tokens plus one advance the position. For greedy decoding this reproduces the
engine's rounds exactly; times are the log's (a timed verify forward, each arm's draft and the rest
of its round measured on the engine's rounds).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.policies import FixedArm, Policy
from metasd_train.decoding.records import IdleScore, RoundRecord


@dataclass
class ReplayContext:
    """What the engine's RoundContext gives a chooser."""

    features: torch.Tensor | None
    round: int = 0
    sleepers: frozenset[int] = frozenset()


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


def record_of(req: dict, arm: int, pos: int, index: int, full: bool = False, asleep=frozenset()) -> RoundRecord:
    """The logged round of `arm` at `pos` as the engine's RoundRecord; idle arms (not asleep) scored
    on its committed tokens."""
    r = req["arms"][arm][pos]
    seconds = r["t_draft"] + r["t_verify"] + r.get("t_other", 0.0)  # logs before t_other: forwards only
    idle = {}
    if full:
        committed = r["accepted"] + 1
        for j, by_pos in req["arms"].items():
            o = by_pos[pos]
            width = min(o["drafted"], committed)  # an idle arm is scored on the committed tokens only
            if j != arm and width > 0 and j not in asleep:
                idle[j] = IdleScore(width, min(o["accepted"], width), o["divergence"])
    return RoundRecord(
        index, arm, r.get("arm_name", str(arm)), r["drafted"], r["accepted"], r["divergence"], r["t_draft"],
        r["t_verify"], 0.0, 0.0, seconds, r["t_step"], r["max_block"], pos < req["length"] - 1, idle,
    )  # fmt: skip


def features_of(req: dict) -> torch.Tensor | None:
    return torch.tensor(req["features"], dtype=torch.float64) if req["features"] else None


def sleepers_of(req: dict) -> frozenset[int]:
    """The arms that had nothing to propose somewhere they could have drafted (the n-gram arm)."""
    return frozenset().union(*(asleep_at(req, pos) for pos in range(req["length"] - 1)))


def asleep_at(req: dict, pos: int) -> frozenset[int]:
    """The arms with nothing to propose at `pos` (as the engine asks a sleeping chooser)."""
    if pos >= req["length"] - 1:
        return frozenset()
    return frozenset(a for a, by_pos in req["arms"].items() if by_pos[pos]["drafted"] == 0)


def walk(req: dict, chooser: BanditChooser, full: bool = False) -> list[RoundRecord]:
    """Decode one logged request as the engine would with `chooser`; its rounds."""
    ctx = ReplayContext(features_of(req), sleepers=sleepers_of(req))
    chooser.begin(ctx)
    pos, out = 0, []
    while pos < req["length"]:
        asleep = asleep_at(req, pos) if chooser.sleeping else frozenset()
        rec = record_of(req, chooser.select(ctx, asleep), pos, ctx.round, full, asleep)
        if rec.could_draft:
            chooser.observe(ctx, rec)
        out.append(rec)
        pos += rec.accepted + 1
        ctx.round += 1
    return out


@dataclass
class Totals:
    tokens: int = 0
    rounds: int = 0
    seconds: float = 0.0


def play(requests: dict[int, dict], make: Callable[[], BanditChooser], persist: bool = True, full: bool = False):
    """{domain: Totals} of a replay; `persist` keeps one chooser across requests, else a fresh one each."""
    chooser = make()
    totals: dict[str, Totals] = defaultdict(Totals)
    for req in requests.values():
        if not persist:
            chooser = make()
        for rec in walk(req, chooser, full):
            t = totals[req["domain"]]
            t.tokens, t.rounds, t.seconds = t.tokens + rec.accepted + 1, t.rounds + 1, t.seconds + rec.t_round
    return totals


def summary(totals: dict[str, Totals]) -> dict[str, dict[str, float]]:
    """Per domain and 'all': τ (tokens per round) and tokens/s (the log's times)."""
    groups = {d: [t] for d, t in sorted(totals.items())}
    groups["all"] = list(totals.values())
    out = {}
    for d, ts in groups.items():
        tokens, rounds, secs = (sum(getattr(t, k) for t in ts) for k in ("tokens", "rounds", "seconds"))
        out[d] = {"tau": tokens / max(rounds, 1), "tokens_per_s": tokens / max(secs, 1e-12)}
    return out


def replay(
    requests,
    policy: Callable[[], Policy],
    reward: str = "speed",
    featurizer: Featurizer | None = None,
    persist: bool = True,
    reset_per_request: bool = False,
    feedback: str = "bandit",
    sleeping: bool = False,
) -> dict[str, dict[str, float]]:
    """Replay a policy (built by `policy()`) inside a BanditChooser; per-domain τ and tokens/s."""
    make = lambda: BanditChooser(policy(), reward, featurizer, reset_per_request, feedback, sleeping)  # noqa: E731
    return summary(play(requests, make, persist, full=feedback == "full"))


def fixed(requests: dict[int, dict], arm: int, n_arms: int) -> dict[str, dict[str, float]]:
    return replay(requests, lambda: FixedArm(n_arms, arm))


def oracle(requests: dict[int, dict], n_arms: int, key: str = "tokens_per_s") -> dict[str, dict[str, float]]:
    """The per-domain oracle: in each domain, the fixed arm best there on `key` (in hindsight)."""
    per_arm = [fixed(requests, a, n_arms) for a in range(n_arms)]
    best = {d: max(range(n_arms), key=lambda a: per_arm[a][d][key]) for d in per_arm[0] if d != "all"}
    totals = defaultdict(Totals)
    for dom, arm in best.items():
        part = {i: q for i, q in requests.items() if q["domain"] == dom}
        totals.update(play(part, lambda a=arm: BanditChooser(FixedArm(n_arms, a))))
    return summary(totals)
