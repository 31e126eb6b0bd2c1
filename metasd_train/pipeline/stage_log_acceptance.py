"""Stage `log_acceptance`: every arm decodes every held-out prompt; one row per round."""

from __future__ import annotations

from collections import defaultdict

import datasets
from rich.progress import Progress
from rich.table import Table

from metasd_train.atomic import atomic_dir
from metasd_train.bandit.chooser import BanditChooser
from metasd_train.bandit.policies import FixedArm
from metasd_train.data.acceptance_log import rows_of, to_dataset
from metasd_train.pipeline import plots
from metasd_train.pipeline.context import StageContext
from metasd_train.pipeline.ensemble import build_arms, distill_specs, make_engine


def heldout(ctx: StageContext) -> list[dict]:
    prompts = datasets.load_from_disk(str(ctx.run.require("data") / "prompts"))
    per_domain = defaultdict(list)
    for row in prompts:
        if row["split"] == "heldout" and len(per_domain[row["domain"]]) < ctx.cfg.decode.heldout_per_domain:
            per_domain[row["domain"]].append(row)
    return [r for d in sorted(per_domain) for r in per_domain[d]]


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    d = cfg.drafter
    arms = build_arms(distill_specs(ctx.run.require("distill")), ctx.target, ctx.tokenizer, d.gamma, d.ngram, d.ngram_gamma)
    engine = make_engine(ctx.target, ctx.tokenizer, arms, cfg.decode)
    prompts = heldout(ctx)
    rows = []
    with Progress() as progress:
        task = progress.add_task("log_acceptance", total=len(prompts) * len(arms))
        for req, row in enumerate(prompts):
            for i in range(len(arms)):
                gen = engine.generate(row["prompt_ids"], cfg.decode.max_new_tokens, BanditChooser(FixedArm(len(arms), i)))
                rows.extend(rows_of(gen, req, row["domain"], i))
                progress.advance(task)
    names = [a.name for a in arms]
    domains = sorted({r["domain"] for r in rows})
    tau = [[_tau(rows, a, dom) for dom in domains] for a in range(len(arms))]
    with atomic_dir(ctx.run.stage_dir("log_acceptance")) as out:
        to_dataset(rows).save_to_disk(str(out / "rounds"))
        plots.heatmap(tau, names, domains, "mean accepted length τ (tokens/round)", out / "tau_heatmap.png")
    table = Table("drafter", *domains, title="τ (tokens per round) on held-out prompts")
    for name, vals in zip(names, tau):
        table.add_row(name, *[f"{v:.2f}" for v in vals])
    ctx.log(table)
    return {"rows": len(rows), "tau": {n: dict(zip(domains, map(lambda v: round(v, 3), vals))) for n, vals in zip(names, tau)}}


def _tau(rows: list[dict], arm: int, domain: str) -> float:
    sel = [r for r in rows if r["arm"] == arm and r["domain"] == domain]
    return sum(r["accepted"] + 1 for r in sel) / max(len(sel), 1)
