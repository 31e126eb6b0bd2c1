"""What the bench times, on the same prompts: HF's baselines, our target alone, each fixed arm, the
shipped policy in persistent and paper mode, the per-category oracle (hindsight), reference policies
(not shipped), and sampled decoding. Engines and choosers are built and warmed outside the timings.
"""

from __future__ import annotations

import time

import torch

from bench.harness import Bench, Prompt, Result, engine_label, engine_stats, hf_stats
from metasd_train.bandit.chooser import chooser_for
from metasd_train.decoding.hf_generate import assisted
from metasd_train.decoding.records import summarize

HF_COMPILE = "hf_static_compile"  # the baseline: HF generate with a static cache, compiled by HF on CUDA
TARGET_ALONE = "engine_target_only"
ORACLE = "oracle_per_category_hindsight"  # the best fixed arm per category, picked after the fact
MODES = {"persistent": False, "paper": True}  # bandit.reset_per_request: paper mode restarts every request


def fixed_name(arm: str) -> str:
    return f"engine_fixed:{arm}"


def metasd_name(policy: str, mode: str) -> str:
    return f"metasd:{policy}:{mode}"


def reference_name(policy: str) -> str:
    return f"not_shipped:metasd:{policy}"


def sampled_name(name: str, temperature: float) -> str:
    return f"sampled_T{temperature:g}:{name}"


def shipped_mode(b: Bench) -> str:
    return "paper" if b.shipped()["config"].get("reset_per_request") else "persistent"


def shipped_row(b: Bench) -> str:
    """The row of the recipe's default policy as exported: the one headline.json reports."""
    return metasd_name(b.shipped()["policy"], shipped_mode(b))


def fixed(i: int):
    return chooser_for(None, fixed=i)[0]


def policy_run(b: Bench, policy: str | None, mode: str | None, temperature: float = 0.0):
    """A timed run of a policy (None: the exported, warm-started one) on a warmed engine; `mode` sets
    reset_per_request (None: as exported). Sampled runs drop a warm start fitted on the greedy log."""
    chooser, feedback = chooser_for(b.ens, policy=policy, greedy=temperature == 0)
    if mode is not None:
        chooser.reset_per_request = MODES[mode]
    engine = b.engine(temperature, full_feedback=feedback == "full")
    if policy is None and temperature == 0:
        b.shipped_engine = engine_label(0.0, feedback == "full")
    return lambda: engine_stats(engine, chooser, b.prompts, b.n)


def hf_subset(b: Bench) -> list[Prompt]:
    """The first prompt of each category, at most `hf_max`: for HF's slow rows."""
    seen, out = set(), []
    for p in b.prompts:
        if p.category not in seen:
            seen.add(p.category)
            out.append(p)
    return out[: b.args.hf_max]


def hf_compiled(b: Bench) -> None:
    """HF static cache + compile on every prompt, each first run untimed: a new prompt length may
    recompile, and a recompile inside the timed pass is not the baseline."""
    if not b.args.hf_compile:
        return
    t = time.perf_counter()
    hf_stats(b.model, b.prompts, b.n, b.eos, static=True)
    b.notes["hf_static_compile_warmup_s"] = time.perf_counter() - t
    b.timed(HF_COMPILE, lambda: hf_stats(b.model, b.prompts, b.n, b.eos, static=True))


def hf_slow(b: Bench) -> None:
    """HF eager, then HF assisted generation with each model drafter named in `assisted`, on a few prompts."""
    few = hf_subset(b)
    if not few:
        return
    hf_stats(b.model, few, min(8, b.n), b.eos)  # CUDA context and kernels warm
    b.timed(f"hf_eager ({len(few)} prompts)", lambda: hf_stats(b.model, few, b.n, b.eos))
    wanted = [s for s in b.args.assisted.split(",") if s]
    for arm in [a for a in b.ens.arms if a.name in wanted and hasattr(a, "model")]:
        kw = assisted(arm.model, arm.gamma)
        b.timed(f"hf_assisted:{arm.name} ({len(few)} prompts)", lambda kw=kw: hf_stats(b.model, few, b.n, b.eos, **kw))


def target_and_fixed_arms(b: Bench) -> None:
    """Our fast path with the target alone, then with each arm fixed for every round."""
    alone = b.engine(alone=True)
    b.timed(TARGET_ALONE, lambda: engine_stats(alone, fixed(0), b.prompts, b.n))
    engine = b.engine()
    for i, name in enumerate(b.ens.arm_names):
        b.timed(fixed_name(name), lambda i=i: engine_stats(engine, fixed(i), b.prompts, b.n))


def shipped_policy(b: Bench) -> None:
    """The exported (warm-started) default policy, persistent across requests and in paper mode."""
    policy = b.shipped()["policy"]
    b.notes["shipped"] = f"{policy}, {shipped_mode(b)} mode (the export's bandit.json)"
    for mode in MODES:
        b.timed(metasd_name(policy, mode), policy_run(b, None, mode))


def oracle(b: Bench) -> None:
    """Per category, the fixed arm that was fastest there, in hindsight: a bound, not a policy."""
    rows = {name: b.results.get(fixed_name(name)) for name in b.ens.arm_names}
    if not rows or None in rows.values():
        b.notes[ORACLE] = "skipped: not every fixed arm ran"
        return
    cats = sorted({p.category for p in b.prompts})
    best = {c: max(rows, key=lambda a: rows[a].summary[c]["tokens_per_s"]) for c in cats}
    b.notes["oracle_arm_per_category"] = best
    stats = [rows[best[p.category]].stats[p.index] for p in b.prompts]
    b.results[ORACLE] = Result(stats, summarize(stats), 0.0)


def reference_policies(b: Bench) -> None:
    """Other registered policies, fresh (not warm-started), for reference: not what the recipe ships."""
    for policy in [s for s in b.args.policies.split(",") if s]:
        b.timed(reference_name(policy), policy_run(b, policy, None))


def sampled(b: Bench) -> None:
    """At temperature `sampled_t`: the shipped policy and our target alone, same seed each."""
    t = b.args.sampled_t
    if not b.args.sampled or t <= 0:
        return
    runs = {
        sampled_name(shipped_row(b), t): policy_run(b, None, shipped_mode(b), t),
        sampled_name(TARGET_ALONE, t): lambda e=b.engine(t, alone=True): engine_stats(e, fixed(0), b.prompts, b.n),
    }
    for name, run in runs.items():
        torch.manual_seed(b.args.seed)
        b.timed(name, run)


# in this order: headline.json's rows first, so a time budget cuts the reference and slow HF rows
TIMED = (hf_compiled, target_and_fixed_arms, shipped_policy, oracle, sampled, reference_policies, hf_slow)


def greedy(name: str) -> bool:
    return not name.startswith("sampled_")


def ours(name: str) -> bool:
    return not name.startswith("hf_")
