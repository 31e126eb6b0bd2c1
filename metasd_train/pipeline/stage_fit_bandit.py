"""Stage `fit_bandit`: warm-start the contextual bandit from the log; rank policies by replay."""

from __future__ import annotations

import datasets
from omegaconf import OmegaConf
from rich.table import Table

from metasd_train.atomic import atomic_dir, write_json
from metasd_train.bandit.context import Featurizer
from metasd_train.bandit.persist import save_bandit
from metasd_train.bandit.policies import make_policy
from metasd_train.bandit.replay import by_request, fixed_tau, oracle_tau, replay, separation
from metasd_train.bandit.warmstart import design, warm_start
from metasd_train.pipeline import plots
from metasd_train.pipeline.context import StageContext

COMPARED = ("linucb", "ucb", "exp3", "thompson", "seqhalving", "random")


def arm_names(rows: list[dict]) -> list[str]:
    return [n for _, n in sorted({(r["arm"], r["arm_name"]) for r in rows})]


def run(ctx: StageContext) -> dict:
    b = ctx.cfg.bandit
    rows = list(datasets.load_from_disk(str(ctx.run.require("log_acceptance") / "rounds")))
    names = arm_names(rows)
    hidden = len(next((r["features"] for r in rows if r["features"]), [])) or 1
    feat = Featurizer(hidden, b.context_dim, b.seed)
    bcfg = OmegaConf.to_container(b)
    fit_rows = [r for r in rows if r["request"] % 2 == 0]
    requests = by_request([r for r in rows if r["request"] % 2 == 1]) or by_request(rows)

    def warm(name):
        def make():
            policy = make_policy(name, len(names), bcfg, dim=b.context_dim)
            warm_start(policy, *design(fit_rows, feat, b.reward), weight=b.prior_strength)
            return policy

        return make

    results = {f"{p} (warm)": replay(requests, warm(p), feat, b.reward) for p in ("linucb", "ucb", "thompson")}
    for p in COMPARED:
        results[p] = replay(requests, lambda p=p: make_policy(p, len(names), bcfg, dim=b.context_dim), feat, b.reward)
    for a, n in enumerate(names):
        results[f"fixed:{n}"] = fixed_tau(requests, a, len(names))
    results["oracle (per domain)"] = oracle_tau(requests, len(names))
    best_fixed = max((k for k in results if k.startswith("fixed:")), key=lambda k: results[k]["all"])
    tokens = sum(req["length"] for req in requests.values())
    oracle_rounds = tokens / results["oracle (per domain)"]["all"]
    regret = {k: tokens / v["all"] - oracle_rounds for k, v in results.items()}  # extra target rounds vs the oracle
    sep = {rw: separation(rows, rw) for rw in ("divergence", "efficiency")}

    policy = make_policy(b.policy, len(names), bcfg, dim=b.context_dim, fixed_arm=_arm_index(b.fixed_arm, names))
    warm_start(policy, *design(rows, feat, b.reward), weight=b.prior_strength)
    domains = [k for k in results["oracle (per domain)"] if k != "all"]
    with atomic_dir(ctx.run.stage_dir("fit_bandit")) as out:
        save_bandit(out, policy, b.policy, names, bcfg, feat)
        write_json(
            out / "replay.json",
            {"tau": results, "regret_rounds": regret, "tokens": tokens, "best_fixed": best_fixed, "separation": sep},
        )
        plots.bars(
            domains + ["all"],
            {
                k: [v[d] for d in domains + ["all"]]
                for k, v in results.items()
                if not k.startswith("fixed:") or k == best_fixed
            },
            "replayed τ by policy",
            "tokens per round",
            out / "replay_tau.png",
        )
        plots.bars(
            domains,
            {rw: [sep[rw][d] for d in domains] for rw in sep},
            "arm separation: var(arm means) / within-arm var",
            "separation",
            out / "reward_separation.png",
        )
    table = Table(
        "policy",
        *domains,
        "all",
        "regret",
        title=f"replayed τ on the held-out half of the log ({tokens} tokens); "
        f"regret = extra target rounds vs the per-domain oracle; best fixed = {best_fixed}",
    )
    for k, v in results.items():
        table.add_row(k, *[f"{v[d]:.2f}" for d in domains + ["all"]], f"{regret[k]:+.0f}")
    ctx.log(table)
    return {"policy": b.policy, "tau_all": {k: round(v["all"], 3) for k, v in results.items()}, "separation": sep}


def _arm_index(name: str, names: list[str]) -> int:
    return names.index(name) if name in names else 0
