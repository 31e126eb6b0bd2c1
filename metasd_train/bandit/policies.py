"""The policy registry: name -> class and how to build it from a BanditConfig-like mapping.

`make_policy`, config validation (`check_policy`) and persistence (bandit/persist.py) all read
`POLICIES`; adding a policy is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from metasd_train.bandit.halving import SequentialHalving
from metasd_train.bandit.linucb import LinUCB
from metasd_train.bandit.policy import Policy
from metasd_train.bandit.simple import FixedArm, RandomArm, RoundRobin, Thompson
from metasd_train.bandit.ucb import UCB, EliminationUCB
from metasd_train.bandit.weights import EXP3, Hedge
from metasd_train.errors import UserError

__all__ = [
    "EXP3",
    "POLICIES",
    "UCB",
    "EliminationUCB",
    "FixedArm",
    "Hedge",
    "LinUCB",
    "Policy",
    "RandomArm",
    "RoundRobin",
    "SequentialHalving",
    "Thompson",
    "check_policy",
    "make_policy",
]


@dataclass(frozen=True)
class Build:
    """What building a policy may read besides the config: arm count, context size, arm names."""

    n_arms: int
    dim: int
    arm_names: list[str] | None


@dataclass(frozen=True)
class PolicySpec:
    cls: type[Policy]
    build: Callable[[Build, Callable], Policy]  # (build, get(key, default)) -> policy
    summary: str


def _fixed_arm(b: Build, get) -> int:
    name = str(get("fixed_arm", "") or "")
    if b.n_arms == 1:
        return 0
    if not name or b.arm_names is None:
        raise UserError(
            f"bandit.policy=fixed needs bandit.fixed_arm=NAME (decode.py: arm=NAME); arms: {', '.join(b.arm_names or [])}"
        )
    if name not in b.arm_names:
        raise UserError(f"bandit.fixed_arm={name!r} is not an arm; choose one of: {', '.join(b.arm_names)}")
    return b.arm_names.index(name)


def _seed(get) -> int:
    return int(get("seed", 0))


POLICIES: dict[str, PolicySpec] = {
    "ucb_elim": PolicySpec(
        EliminationUCB,
        lambda b, get: EliminationUCB(
            b.n_arms,
            beta=float(get("beta", 1.0)),
            shift_threshold=float(get("shift_threshold", 10.0)),
            seed=_seed(get),
        ),
        "variance-aware UCB that eliminates ruled-out arms; they return on reset or a detected shift",
    ),
    "ucb": PolicySpec(
        UCB, lambda b, get: UCB(b.n_arms, beta=float(get("beta", 1.0)), seed=_seed(get)), "MetaSD-UCB (the paper's)"
    ),
    "exp3": PolicySpec(
        EXP3,
        lambda b, get: EXP3(
            b.n_arms, gamma=float(get("exp3_gamma", 0.1)), share=float(get("exp3_share", 0.0)), seed=_seed(get)
        ),
        "MetaSD-EXP3 (the paper's); exp3_share > 0 gives EXP3.S",
    ),
    "hedge": PolicySpec(
        Hedge,
        lambda b, get: Hedge(
            b.n_arms, eta=float(get("hedge_eta", 10.0)), share=float(get("hedge_share", 0.01)), seed=_seed(get)
        ),
        "exponential weights for feedback=full (HedgeSpec): no exploration",
    ),
    "seqhalving": PolicySpec(
        SequentialHalving,
        lambda b, get: SequentialHalving(b.n_arms, budget=int(get("budget", 64)), seed=_seed(get)),
        "MetaSD Sequential Halving over `budget` rounds per request",
    ),
    "linucb": PolicySpec(
        LinUCB,
        lambda b, get: LinUCB(
            b.n_arms, dim=b.dim, beta=float(get("beta", 1.0)), ridge=float(get("ridge", 1.0)), seed=_seed(get)
        ),
        "disjoint LinUCB over prompt features",
    ),
    "thompson": PolicySpec(Thompson, lambda b, get: Thompson(b.n_arms, seed=_seed(get)), "Gaussian Thompson sampling"),
    "random": PolicySpec(RandomArm, lambda b, get: RandomArm(b.n_arms, seed=_seed(get)), "uniformly random arm"),
    "round_robin": PolicySpec(RoundRobin, lambda b, get: RoundRobin(b.n_arms, seed=_seed(get)), "arms in turn"),
    "fixed": PolicySpec(
        FixedArm, lambda b, get: FixedArm(b.n_arms, _fixed_arm(b, get), seed=_seed(get)), "always bandit.fixed_arm"
    ),
}

# (key, ok(value), what it must be): ranges every policy's config must respect
RANGES = (
    ("beta", lambda v: v >= 0, ">= 0"),
    ("ridge", lambda v: v > 0, "> 0"),
    ("exp3_gamma", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("exp3_share", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("hedge_eta", lambda v: v > 0, "> 0"),
    ("hedge_share", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("budget", lambda v: v >= 1, ">= 1"),
    ("prior_strength", lambda v: v >= 0, ">= 0"),
    ("shift_threshold", lambda v: v >= 0, ">= 0 (0 turns shift detection off)"),
    ("context_dim", lambda v: v >= 1, ">= 1"),
)


def check_policy(name: str, cfg: Mapping | None = None) -> None:
    """UserError, naming the key and the valid choices, for an unknown policy or an out-of-range knob."""
    if name not in POLICIES:
        raise UserError(f"bandit.policy={name!r} is not valid; choose one of: {', '.join(POLICIES)}")
    cfg = cfg or {}
    for key, ok, want in RANGES:
        if key in cfg and cfg[key] is not None and not ok(cfg[key]):
            raise UserError(f"bandit.{key}={cfg[key]} is out of range: it must be {want}")


def make_policy(
    name: str, n_arms: int, cfg: Mapping | None = None, dim: int = 16, arm_names: list[str] | None = None
) -> Policy:
    """Build policy `name` over `n_arms` from a BanditConfig-like mapping (UserError on bad names or ranges).

    `arm_names` resolves `fixed_arm` (a name) for policy=fixed; with one arm it is that arm.
    """
    cfg = dict(cfg or {})
    check_policy(name, cfg)
    return POLICIES[name].build(Build(n_arms, dim, arm_names), cfg.get)
