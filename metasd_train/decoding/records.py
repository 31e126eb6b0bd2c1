"""What a decode leaves behind: one record per round, one Generation per request, and their summary.

One home for the tokens/s, τ and arm-share aggregation that decode.py, the bench and the stages
report (`summarize`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class IdleScore:
    """Full-information feedback for an arm that sat out a round, scored on the committed tokens."""

    drafted: int  # positions it was scored on (what it could have drafted, capped by its γ)
    accepted: float  # what it would have had accepted: leading matches (greedy) or the expected count (sampled)
    divergence: float  # mean 1 - TV(p, q) over the scored positions


@dataclass
class RoundRecord:
    round: int
    arm: int
    arm_name: str
    drafted: int
    accepted: int
    divergence: float  # mean 1 - TV(p, q) over the drafted block
    t_draft: float  # seconds: drafting (catch-up included)
    t_verify: float  # seconds: the target's verify forward and acceptance
    t_idle: float  # seconds: scoring idle arms (full feedback)
    t_bandit: float  # seconds: select + update
    t_round: float  # seconds: the whole round, wall clock
    t_step: float  # the engine's estimate of one target step (width 1), seconds
    max_block: int  # the longest round any arm can give: γmax + 1
    could_draft: bool = True  # False when the length limit left no room to draft
    idle: dict[int, IdleScore] = field(default_factory=dict)

    @property
    def efficiency(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


@dataclass
class Generation:
    tokens: list[int]  # new tokens only
    rounds: list[RoundRecord]
    stop: str  # eos | length | context
    seconds: float
    arm_names: list[str]

    def summary(self) -> dict:
        drafted = [r for r in self.rounds if r.drafted > 0]
        shares = dict.fromkeys(self.arm_names, 0)
        for r in self.rounds:
            shares[r.arm_name] += 1
        n = max(len(self.rounds), 1)
        return {
            "new_tokens": len(self.tokens),
            "rounds": len(self.rounds),
            "tau": len(self.tokens) / n,  # mean tokens per round (accepted + 1)
            "tokens_per_s": len(self.tokens) / max(self.seconds, 1e-9),
            "acceptance": sum(r.accepted for r in drafted) / max(sum(r.drafted for r in drafted), 1),
            "arm_share": {k: v / n for k, v in shares.items()},
            "bandit_share": sum(r.t_bandit for r in self.rounds) / max(sum(r.t_round for r in self.rounds), 1e-9),
            "round_seconds": round_breakdown(self.rounds),
            "stop": self.stop,
            "seconds": self.seconds,
        }


PHASES = ("draft", "verify", "idle", "bandit")  # RoundRecord.t_<phase>; the rest of a round is host work


def round_breakdown(rounds: list[RoundRecord]) -> dict[str, float]:
    """Seconds summed over `rounds` per phase: drafting and verification as the device timed them (CUDA
    events), idle scoring, the bandit's select + update, and `host`: the rest of the wall time (commit,
    bookkeeping, launches the device waited for)."""
    out = {ph: sum(getattr(r, f"t_{ph}") for r in rounds) for ph in PHASES}
    out["round"] = sum(r.t_round for r in rounds)
    out["host"] = max(out["round"] - sum(out[ph] for ph in PHASES), 0.0)
    return out


def summarize(stats: list[dict], baseline_key: str = "baseline_seconds") -> dict:
    """Pool per-request summaries (each with a 'category') into one row per category and 'all'.

    Each row: requests, new_tokens, τ, tokens/s, bandit share and arm shares weighted by rounds;
    where every request carries `baseline_key` (seconds the baseline took for the same tokens),
    also baseline tokens/s and the speed-up over it.
    """
    groups = defaultdict(list)
    for s in stats:
        groups[s.get("category", "default")].append(s)
        groups["all"].append(s)
    out = {}
    for cat, ss in groups.items():
        tokens, secs, rounds = (sum(s[k] for s in ss) for k in ("new_tokens", "seconds", "rounds"))
        row = {
            "requests": len(ss),
            "new_tokens": tokens,
            "tau": tokens / max(rounds, 1),
            "tokens_per_s": tokens / max(secs, 1e-9),
            "bandit_share": sum(s.get("bandit_share", 0.0) * s["seconds"] for s in ss) / max(secs, 1e-9),
        }
        if all(baseline_key in s for s in ss):
            row["baseline_tokens_per_s"] = tokens / max(sum(s[baseline_key] for s in ss), 1e-9)
            row["speedup"] = row["tokens_per_s"] / row["baseline_tokens_per_s"]
        shares = defaultdict(float)
        for s in ss:
            for arm, v in s["arm_share"].items():
                shares[arm] += v * s["rounds"]
        row["arm_share"] = {a: v / max(rounds, 1) for a, v in shares.items()}
        if all("round_seconds" in s for s in ss):  # per-round milliseconds by phase
            row["round_ms"] = {k: 1e3 * sum(s["round_seconds"][k] for s in ss) / max(rounds, 1)
                               for k in ss[0]["round_seconds"]}  # fmt: skip
        out[cat] = row
    return {k: out[k] for k in sorted(out, key=lambda c: (c == "all", c))}
