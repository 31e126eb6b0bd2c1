"""A simulated engine with known per-arm speeds, to test policies and to choose the default one.

It speaks the engine's Chooser protocol (begin / select / observe with a RoundRecord), so the
chooser, the rewards and the policies run exactly as they do on a GPU. Time is in units of one
target step (`t_step` = 1). A model arm accepts each drafted token with its per-category rate
until the first rejection and pays `cost` per drafted token; the n-gram arm is bursty: inside a
repetitive span (a Markov state that persists across rounds) it proposes a full block that is
mostly accepted, outside it rarely proposes. Parameters are illustrative, in the shape of
bench/results/h100x2-smollm2 (n-gram far ahead; distilled drafters about as fast as the target).
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from metasd_train.decoding.records import IdleScore, RoundRecord

VERIFY, VERIFY_PER_TOKEN, OVERHEAD, NOISE = 1.05, 0.01, 0.1, 0.03


@dataclass(frozen=True)
class SimArm:
    name: str
    gamma: int
    cost: float  # draft time per drafted token, in target steps
    accept: dict[str, float]  # per category: per-token acceptance (outside repetitive spans for the n-gram)
    ngram: bool = False


@dataclass(frozen=True)
class Scenario:
    arms: tuple[SimArm, ...]
    repeat: dict[str, float]  # per category: the share of rounds inside a repetitive span
    order: tuple[str, ...]  # the category of each request, in order
    tokens: int = 256  # new tokens per request

    @property
    def categories(self) -> list[str]:
        return sorted(set(self.order))


@dataclass
class SimContext:
    features: torch.Tensor | None
    round: int = 0
    sleepers: frozenset[int] = frozenset()


@dataclass
class Tally:
    tokens: int = 0
    seconds: float = 0.0
    rounds: int = 0
    bandit_wall: float = 0.0  # measured wall seconds of select + observe (not in `seconds`)
    arms: dict[int, int] = field(default_factory=lambda: defaultdict(int))


class SimEngine:
    """Decodes simulated requests with a chooser; per-category tallies of tokens and simulated seconds.

    Common random numbers: what an arm would accept at a token position of a request, and how long
    its round would take, depend on (seed, request, position, arm) only, so two policies meet the
    same text and differ only by their choices (as replays of one log do).
    """

    def __init__(self, scenario: Scenario, seed: int = 0, full_feedback: bool = False):
        self.s, self.seed, self.full = scenario, seed, full_feedback
        self.max_block = max(a.gamma for a in scenario.arms) + 1
        self.tally: dict[str, Tally] = defaultdict(Tally)
        self.request, self.spans, self.last = 0, [], None

    def _spans(self, cat: str) -> list[bool]:
        """Per token position: inside a repetitive span? (a Markov chain with the category's stationary share)."""
        rng, pi = random.Random(f"{self.seed}/{self.request}/spans"), self.s.repeat[cat]
        enter = min(0.03 * pi / max(1 - pi, 1e-9), 1.0)
        state, out = rng.random() < pi, []
        for _ in range(self.s.tokens):
            out.append(state)
            state = (rng.random() < 0.97) if state else (rng.random() < enter)
        return out

    def _outcome(self, j: int, cat: str, pos: int, room: int) -> tuple[int, int, float, float]:
        """(proposed, accepted, divergence, time noise) of arm j drafting at most `room` tokens at `pos`."""
        arm, rng = self.s.arms[j], random.Random(f"{self.seed}/{self.request}/{pos}/{j}")
        repeat, p = self.spans[pos], arm.accept[cat]
        proposed = min(arm.gamma, room)
        if arm.ngram:
            p = 0.85 if repeat else p
            proposed = proposed if (repeat or rng.random() < 0.4) else 0
        elif repeat:
            p = min(p + 0.2, 0.95)
        hits = [rng.random() < p for _ in range(proposed)]
        accepted = next((i for i, h in enumerate(hits) if not h), proposed)
        return proposed, accepted, sum(hits) / proposed if proposed else 0.0, 1 + NOISE * rng.gauss(0, 1) / 3

    def round(self, cat: str, chooser, ctx, pos: int, room: int) -> int:
        """One round at token position `pos`; returns the tokens it commits."""
        outcomes = [self._outcome(j, cat, pos, room) for j in range(len(self.s.arms))]
        sleeping = getattr(chooser, "sleeping", False)
        asleep = frozenset(j for j, o in enumerate(outcomes) if o[0] == 0 and room > 0) if sleeping else frozenset()
        t0 = time.perf_counter()
        i = chooser.select(ctx, asleep) if asleep else chooser.select(ctx)
        wall = time.perf_counter() - t0
        (k, n, div, noise), arm = outcomes[i], self.s.arms[i]
        catchup = arm.cost if (not arm.ngram and not self.full and self.last != i) else 0.0
        t_draft, t_verify = noise * (arm.cost * k + catchup), noise * (VERIFY + VERIFY_PER_TOKEN * k)
        idle, t_idle = {}, 0.0
        if self.full:
            for j, (kj, nj, dj, _) in enumerate(outcomes):
                width = min(n + 1, self.s.arms[j].gamma)
                if j != i and width > 0 and j not in asleep:
                    idle[j] = IdleScore(width, min(nj, kj, width), dj)
                    t_idle += 0.0 if self.s.arms[j].ngram else self.s.arms[j].cost
        t_round = t_draft + t_verify + noise * OVERHEAD + t_idle
        rec = RoundRecord(ctx.round, i, arm.name, k, n, div, t_draft, t_verify, t_idle, 0.0, t_round, 1.0,
                          self.max_block, room > 0, idle)  # fmt: skip
        if rec.could_draft:
            t1 = time.perf_counter()
            chooser.observe(ctx, rec)
            wall += time.perf_counter() - t1
        self._count(cat, i, n + 1, t_round, wall)
        return n + 1

    def _count(self, cat: str, arm: int, tokens: int, seconds: float, wall: float) -> None:
        t = self.tally[cat]
        t.tokens, t.seconds, t.rounds, t.bandit_wall = (
            t.tokens + tokens,
            t.seconds + seconds,
            t.rounds + 1,
            t.bandit_wall + wall,
        )
        t.arms[arm] += 1
        self.last = arm

    def generate(self, cat: str, chooser) -> None:
        cats = self.s.categories
        sleepers = frozenset(j for j, a in enumerate(self.s.arms) if a.ngram)
        ctx = SimContext(torch.eye(len(cats), dtype=torch.float64)[cats.index(cat)], sleepers=sleepers)
        chooser.begin(ctx)
        self.spans, self.last, pos = self._spans(cat), None, 0
        while pos < self.s.tokens:
            pos += self.round(cat, chooser, ctx, pos, self.s.tokens - pos - 1)
            ctx.round += 1
        self.request += 1

    def run(self, chooser) -> dict[str, Tally]:
        for cat in self.s.order:
            self.generate(cat, chooser)
        return self.tally


def speed(tally: dict[str, Tally], cats: list[str] | None = None) -> float:
    """Tokens per simulated second (target steps) over `cats` (default: all)."""
    ts = [t for c, t in tally.items() if cats is None or c in cats]
    return sum(t.tokens for t in ts) / max(sum(t.seconds for t in ts), 1e-12)
