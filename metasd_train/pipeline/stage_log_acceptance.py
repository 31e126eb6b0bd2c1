"""Stage `log_acceptance`: for every held-out prompt, what every arm would have accepted at every
position of the target's greedy answer (exact full-information log), plus a τ heatmap."""

from __future__ import annotations

from collections import defaultdict

import datasets
import torch
from rich.progress import Progress
from rich.table import Table

from metasd_train.atomic import atomic_dir
from metasd_train.bandit.replay import by_request, fixed_tau
from metasd_train.config import arm_gamma
from metasd_train.data.acceptance_log import arm_rows, forward_seconds
from metasd_train.decoding.engine import throughput_reward
from metasd_train.pipeline import plots, ranks
from metasd_train.pipeline.context import StageContext
from metasd_train.pipeline.ensemble import build_arms, distill_specs, eos_ids, make_engine


def heldout(ctx: StageContext) -> list[dict]:
    prompts = datasets.load_from_disk(str(ctx.run.require("data") / "prompts"))
    per_domain = defaultdict(list)
    for row in prompts:
        if row["split"] == "heldout" and len(per_domain[row["domain"]]) < ctx.cfg.decode.heldout_per_domain:
            per_domain[row["domain"]].append(row)
    return [r for d in sorted(per_domain) for r in per_domain[d]]


@torch.inference_mode()
def committed(target, prompt: list[int], n: int, eos: list[int]) -> list[int]:
    """The target's own greedy answer: what every lossless greedy arm commits."""
    out = target.generate(
        torch.tensor([prompt], device=target.device),
        do_sample=False,
        max_new_tokens=n,
        eos_token_id=eos,
        pad_token_id=eos[0],
    )
    return out[0].tolist()


def request_rows(ctx, engine, arms, req: int, row: dict, eos, t_verify: float, t_token: list[float]) -> list[dict]:
    """One row per (arm, round) of one held-out request, replayed exactly against the target's answer."""
    seq = committed(ctx.target, row["prompt_ids"], ctx.cfg.decode.max_new_tokens, eos)
    _, rctx = engine.prefill(row["prompt_ids"], 1)
    feats = [] if rctx.features is None else rctx.features.float().tolist()
    rows = []
    for i, arm in enumerate(arms):
        for t, (k, n, div) in enumerate(arm_rows(arm, seq, len(row["prompt_ids"]), ctx.device)):
            t_draft = k * t_token[i]
            rows.append(
                {
                    "request": req,
                    "domain": row["domain"],
                    "round": t,
                    "arm": i,
                    "arm_name": arm.name,
                    "drafted": k,
                    "accepted": n,
                    "divergence": div,
                    "efficiency": n / k if k else 0.0,
                    "throughput": throughput_reward(n, t_draft, t_verify, engine.max_block),
                    "t_draft": t_draft,
                    "t_verify": t_verify,
                    "features": feats,
                }
            )
    return rows


def run(ctx: StageContext) -> dict:
    cfg, d = ctx.cfg, ctx.cfg.drafter
    specs = [{**s, "gamma": arm_gamma(d, s["name"])} for s in distill_specs(ctx.run.require("distill"))]
    arms = build_arms(specs, ctx.target, ctx.tokenizer, d.gamma, d.ngram, arm_gamma(d, "ngram"))
    engine = make_engine(ctx.target, ctx.tokenizer, arms, cfg.decode)
    eos = eos_ids(ctx.target, ctx.tokenizer)
    # one timing for all ranks, so the rows do not depend on how many there are
    timings = None
    if ranks.is_zero():
        timings = (
            forward_seconds(ctx.target, ctx.device, d.gamma + 1),
            [forward_seconds(a.model, ctx.device, 1) if a.kind == "model" else 0.0 for a in arms],
        )
    t_verify, t_token = ranks.broadcast(timings)
    prompts = heldout(ctx)
    with Progress() as progress:
        task = progress.add_task("log_acceptance", total=len(prompts))
        rows = ranks.map_sharded(
            lambda req, chunk: request_rows(ctx, engine, arms, req, chunk[0], eos, t_verify, t_token),
            prompts,
            on_done=lambda n: progress.advance(task, n * ranks.world()),
        )
    if not ranks.is_zero():
        return {}
    names = [a.name for a in arms]
    requests = by_request(rows)
    taus = [fixed_tau(requests, a, len(arms)) for a in range(len(arms))]
    domains = [k for k in taus[0] if k != "all"]
    with atomic_dir(ctx.run.stage_dir("log_acceptance")) as out:
        datasets.Dataset.from_list(rows).save_to_disk(str(out / "rounds"))
        plots.heatmap(
            [[t[dom] for dom in domains] for t in taus],
            names,
            domains,
            "τ (tokens per round, greedy) on held-out prompts",
            out / "tau_heatmap.png",
        )
    table = Table("drafter", *domains, "all", title="τ (tokens per round, greedy) on held-out prompts")
    for name, t in zip(names, taus):
        table.add_row(name, *[f"{t[k]:.2f}" for k in domains + ["all"]])
    ctx.log(table)
    return {"rows": len(rows), "tau": {n: {k: round(v, 3) for k, v in t.items()} for n, t in zip(names, taus)}}
