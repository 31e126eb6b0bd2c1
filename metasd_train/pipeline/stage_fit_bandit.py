"""Stage `fit_bandit`: warm-start the configured policy from the acceptance log, export it, and rank
policies and rewards by replaying the log.

Replays fit on the even requests of the log and play the odd ones; the exported policy is fitted on
all of them. replay.json keeps the parts that depend only on the log's tokens ("deterministic":
identical for identical logs) apart from those that depend on its measured times ("timed").
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
from omegaconf import OmegaConf
from rich.table import Table

from metasd_train.atomic import atomic_dir, write_json
from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.persist import save_bandit
from metasd_train.bandit.policies import Policy, make_policy
from metasd_train.bandit.ranking import reward_ranking, separation
from metasd_train.bandit.replay import by_request, fixed, oracle, replay
from metasd_train.bandit.warmstart import on_policy, warm_start
from metasd_train.pipeline import plots
from metasd_train.pipeline.context import StageContext

COMPARED = ("ucb_elim", "ucb", "exp3", "hedge", "seqhalving", "thompson", "linucb", "random")  # replayed cold


def arm_names(rows: list[dict]) -> list[str]:
    return [n for _, n in sorted({(r["arm"], r["arm_name"]) for r in rows})]


def load_log(ctx: StageContext) -> tuple[dict[int, dict], list[str], Featurizer]:
    rows = list(datasets.load_from_disk(str(ctx.run.require("log_acceptance") / "rounds")))
    b = ctx.cfg.bandit
    hidden = len(next((r["features"] for r in rows if r["features"]), [])) or 1
    return by_request(rows), arm_names(rows), Featurizer(hidden, b.context_dim, b.seed)


def halves(requests: dict[int, dict]) -> tuple[dict[int, dict], dict[int, dict]]:
    """(fit, evaluate): even and odd requests; a one-request log is both."""
    fit = {i: r for i, r in requests.items() if i % 2 == 0}
    held = {i: r for i, r in requests.items() if i % 2 == 1}
    return fit, held or fit


def fitted(ctx, name: str, names: list[str], prior: dict[int, dict] | None, feat: Featurizer) -> Callable[[], Policy]:
    """A factory of copies of policy `name`, warm-started on `prior` (None: cold)."""
    b = ctx.cfg.bandit
    cfg = OmegaConf.to_container(b)
    policy = make_policy(name, len(names), cfg, dim=b.context_dim, arm_names=names)
    if prior:
        warm_start(policy, prior, b.reward, b.prior_strength, feat, b.sleeping)
    state = policy.state_dict()

    def copy() -> Policy:
        p = make_policy(name, len(names), cfg, dim=b.context_dim, arm_names=names)
        p.load_state_dict(state)
        return p

    return copy


def replay_policies(ctx, names, fit, held, feat) -> dict[str, dict]:
    """Per-domain τ and tokens/s: the configured policy warm in paper and persistent mode, the
    compared policies cold, MetaSD's UCB on divergence, each fixed arm and the per-domain oracle."""
    b, k = ctx.cfg.bandit, len(names)
    warm = fitted(ctx, b.policy, names, fit, feat)
    kw = {"feedback": b.feedback, "sleeping": b.sleeping}
    out = {
        f"{b.policy} (warm, paper)": replay(held, warm, b.reward, feat, reset_per_request=True, **kw),
        f"{b.policy} (warm, persistent)": replay(held, warm, b.reward, feat, **kw),
    }
    for p in COMPARED:
        out[p] = replay(held, fitted(ctx, p, names, None, feat), b.reward, feat, **kw)
    out["ucb (divergence, MetaSD)"] = replay(held, fitted(ctx, "ucb", names, None, feat), "divergence", feat)
    for a, n in enumerate(names):
        out[f"fixed:{n}"] = fixed(held, a, k)
    out["oracle (per domain)"] = oracle(held, k)
    return out


def scores(results: dict[str, dict]) -> tuple[str, dict[str, dict[str, float]]]:
    """(best fixed arm, {policy: tokens/s over the best fixed arm and over the oracle})."""
    best = max((n for n in results if n.startswith("fixed:")), key=lambda n: results[n]["all"]["tokens_per_s"])
    ref, top = results[best]["all"]["tokens_per_s"], results["oracle (per domain)"]["all"]["tokens_per_s"]
    return best, {
        n: {"over_best_fixed": v["all"]["tokens_per_s"] / ref, "over_oracle": v["all"]["tokens_per_s"] / top}
        for n, v in results.items()
    }


def write(ctx, out, results: dict, report: dict) -> None:
    domains = [d for d in results["oracle (per domain)"] if d != "all"]
    shown = {k: v for k, v in results.items() if not k.startswith("fixed:") or k == report["timed"]["best_fixed"]}
    series = {k: [v[d]["tokens_per_s"] for d in domains + ["all"]] for k, v in shown.items()}
    plots.bars(
        domains + ["all"], series, "replayed tokens/s by policy", "tokens/s (log timings)", out / "replay_tau.png"
    )
    sep = report["timed"]["separation"]
    plots.bars(
        domains,
        {rw: [sep[rw].get(d, 0.0) for d in domains] for rw in sep},
        "arm separation: var(arm means) / within-arm var",
        "separation",
        out / "reward_separation.png",
    )
    write_json(out / "replay.json", report)


def log_table(ctx, results: dict, report: dict) -> None:
    t = report["timed"]
    domains = [d for d in results["oracle (per domain)"] if d != "all"]
    table = Table(
        "policy", *domains, "all", "x best fixed", "x oracle",
        title=f"replayed tokens/s on the log's held-out half; best fixed = {t['best_fixed']}",
    )  # fmt: skip
    for k, v in results.items():
        s = t["scores"][k]
        table.add_row(k, *[f"{v[d]['tokens_per_s']:.0f}" for d in domains + ["all"]],
                      f"{s['over_best_fixed']:.3f}", f"{s['over_oracle']:.3f}")  # fmt: skip
    ctx.log(table)
    rank = Table("reward", *t["reward_ranking"][next(iter(t["reward_ranking"]))],
                 title="Spearman(per-arm mean reward, per-arm replayed tokens/s)")  # fmt: skip
    for rw, per in t["reward_ranking"].items():
        rank.add_row(rw, *[f"{v:+.2f}" for v in per.values()])
    ctx.log(rank)


def run(ctx: StageContext) -> dict:
    b = ctx.cfg.bandit
    requests, names, feat = load_log(ctx)
    fit, held = halves(requests)
    results = replay_policies(ctx, names, fit, held, feat)
    best, sc = scores(results)
    ranking = reward_ranking(held, len(names))
    sep = {rw: separation(on_policy(held, len(names), rw), held, len(names)) for rw in ranking}
    report = {
        "deterministic": {"tau": {k: {d: v[d]["tau"] for d in v} for k, v in results.items() if k.startswith("fixed:")}},
        "timed": {"best_fixed": best, "scores": sc, "reward_ranking": ranking, "separation": sep,
                  "results": results},
    }  # fmt: skip
    policy = fitted(ctx, b.policy, names, requests, feat)()
    with atomic_dir(ctx.run.stage_dir("fit_bandit")) as out:
        save_bandit(out, policy, b.policy, names, OmegaConf.to_container(b), feat)
        write(ctx, out, results, report)
    log_table(ctx, results, report)
    mine = sc[f"{b.policy} (warm, {'paper' if b.reset_per_request else 'persistent'})"]
    return {
        "policy": b.policy,
        "reward": b.reward,
        "over_best_fixed": round(mine["over_best_fixed"], 3),
        "over_oracle": round(mine["over_oracle"], 3),
        "reward_ranking_all": {k: round(v["all"], 2) for k, v in ranking.items()},
    }
