"""Scenarios for the simulated engine, and the comparison that chose the default policy.

`compare()` plays every candidate (policy, reward, feedback, paper or persistent mode) warm-started
and cold on each scenario and reports its speed against the best fixed arm and against the
per-category oracle (the best fixed arm of each category, in hindsight). The default in
BanditConfig is the candidate whose worst case best meets ">= 1.0x the best fixed arm and
>= 0.95 of the oracle" (`pick`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import FixedArm, make_policy
from metasd_train.bandit.simulate import Scenario, SimArm, SimEngine, speed

CATS = ("chat", "code", "math", "qa", "summarisation", "translation")


def _arms_h100() -> tuple[SimArm, ...]:
    arms = [SimArm("generalist", 4, 0.15, dict.fromkeys(CATS, 0.40))]
    for c in CATS:
        arms.append(SimArm(c, 4, 0.15, {d: 0.43 if d == c else 0.37 for d in CATS}))
    return (*arms, SimArm("ngram", 4, 0.01, dict.fromkeys(CATS, 0.25), ngram=True))


def _arms_heads() -> tuple[SimArm, ...]:
    head = dict(zip(CATS, (0.65, 0.55, 0.75, 0.70, 0.60, 0.45)))
    return (
        SimArm("generalist", 4, 0.15, dict.fromkeys(CATS, 0.40)),
        SimArm("head", 4, 0.05, head),
        SimArm("ngram", 4, 0.01, dict.fromkeys(CATS, 0.25), ngram=True),
    )


REPEAT = dict(zip(CATS, (0.55, 0.50, 0.45, 0.45, 0.30, 0.75)))
GROUPED = tuple(c for c in CATS for _ in range(4))  # as the bench orders its prompts
MIXED = tuple(c for _ in range(4) for c in CATS)

SCENARIOS = {
    # n-gram far ahead everywhere; distilled drafters about as fast as the target alone
    "h100_like": Scenario(_arms_h100(), REPEAT, GROUPED),
    # a cheap EAGLE-style head that wins some categories and loses others to the n-gram
    "heads": Scenario(_arms_heads(), REPEAT, GROUPED),
    # the same with categories interleaved: the best arm changes at every request
    "heads_mixed": Scenario(_arms_heads(), REPEAT, MIXED),
}


@dataclass(frozen=True)
class Candidate:
    """A shippable default: policy, reward, feedback and mode. It is played warm (prior from a separate
    simulated log, as fit_bandit exports it for greedy decoding) and cold (no prior, as chooser_for
    gives it for sampled decoding, where the greedy log's prior is dropped)."""

    policy: str
    reward: str = "speed"
    feedback: str = "bandit"
    paper: bool = False  # reset_per_request
    warm: bool = True
    sleeping: bool = False  # bandit.sleeping: arms without a proposal sit the round out

    @property
    def name(self) -> str:
        mode = f"{self.policy}/{self.reward}/{self.feedback}/{'paper' if self.paper else 'persistent'}"
        return mode + ("/sleeping" if self.sleeping else "")


CANDIDATES = (
    Candidate("ucb", "divergence"),
    Candidate("ucb", "divergence", paper=True),
    Candidate("exp3", "divergence"),
    Candidate("seqhalving", "divergence", paper=True),
    Candidate("ucb"),
    Candidate("ucb", paper=True),
    Candidate("thompson"),
    Candidate("ucb_elim"),
    Candidate("ucb_elim", paper=True),
    Candidate("hedge", feedback="full"),
    Candidate("linucb"),
    Candidate("ucb_elim", sleeping=True),
    Candidate("ucb_elim", paper=True, sleeping=True),
    Candidate("thompson", sleeping=True),
    Candidate("hedge", feedback="full", sleeping=True),
)

DEFAULT = Candidate("ucb_elim", sleeping=True)  # what compare() + pick() chose; BanditConfig's default


def sim_prior(s: Scenario, reward: str, seed: int, requests: int = 2, sleeping: bool = False) -> torch.Tensor:
    """[C, 3, K] on-policy pseudo-observations per category from a separate simulated log (each arm
    fixed over `requests` requests of each category, as warmstart.py replays the real log)."""
    k, cats = len(s.arms), s.categories
    out = torch.zeros(len(cats), 3, k, dtype=torch.float64)
    for c, cat in enumerate(cats):
        for arm in range(k):
            chooser = BanditChooser(FixedArm(k, arm), reward, sleeping=sleeping)
            SimEngine(Scenario(s.arms, s.repeat, (cat,) * requests, s.tokens), seed=10_000 + seed).run(chooser)
            out[c, :, arm] = chooser.policy.stats[:, arm]
    return out


def play(c: Candidate, s: Scenario, seed: int, cfg: dict | None = None):
    """Tallies of candidate `c` on scenario `s`."""
    k, dim = len(s.arms), len(s.categories)
    policy = make_policy(c.policy, k, {"seed": seed, **(cfg or {})}, dim=dim, arm_names=[a.name for a in s.arms])
    if c.warm:
        prior = sim_prior(s, c.reward, seed, sleeping=c.sleeping)  # [C, 3, K]
        if c.policy == "linucb":  # one row per (category, arm) on the category's one-hot context
            xs, arms = torch.eye(dim).repeat_interleave(k, 0), torch.arange(k).repeat(dim)
            counts, sums = prior[:, 0].reshape(-1), prior[:, 1].reshape(-1)
            policy.fit(xs, arms, sums / counts.clamp_min(1e-12), counts)
        policy.set_prior(*prior.sum(0))
    chooser = BanditChooser(policy, c.reward, (lambda f: f), c.paper, c.feedback, c.sleeping)
    return SimEngine(s, seed, full_feedback=c.feedback == "full").run(chooser)


def baselines(s: Scenario, seed: int) -> tuple[float, float]:
    """(best fixed arm's speed, per-category oracle's speed)."""
    k = len(s.arms)
    per_arm = [SimEngine(s, seed).run(BanditChooser(FixedArm(k, a))) for a in range(k)]
    best = max(speed(t) for t in per_arm)
    tokens = seconds = 0.0
    for cat in s.categories:
        t = max((p[cat] for p in per_arm), key=lambda x: x.tokens / x.seconds)
        tokens, seconds = tokens + t.tokens, seconds + t.seconds
    return best, tokens / seconds


def compare(seeds=range(3), candidates=CANDIDATES, scenarios=None) -> dict[str, dict[str, dict[str, float]]]:
    """{candidate: {scenario/warm|cold: {over_best_fixed, over_oracle, bandit_us}}}, averaged over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for sname, s in (scenarios or SCENARIOS).items():
        base = [baselines(s, seed) for seed in seeds]
        for c, warm in ((c, w) for c in candidates for w in (True, False)):
            runs = [play(replace(c, warm=warm), s, seed) for seed in seeds]
            fixed = sum(speed(t) / b[0] for t, b in zip(runs, base)) / len(runs)
            oracle = sum(speed(t) / b[1] for t, b in zip(runs, base)) / len(runs)
            walls = [sum(x.bandit_wall for x in t.values()) / sum(x.rounds for x in t.values()) for t in runs]
            row = {"over_best_fixed": fixed, "over_oracle": oracle, "bandit_us": 1e6 * sum(walls) / len(walls)}
            out.setdefault(c.name, {})[f"{sname}/{'warm' if warm else 'cold'}"] = row
    return out


def pick(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """The candidate whose worst case (scenario, warm or cold) scores best on min(x best fixed, x oracle / 0.95)."""

    def worst(rows):
        return min(min(r["over_best_fixed"], r["over_oracle"] / 0.95) for r in rows.values())

    return max(table, key=lambda name: worst(table[name]))
