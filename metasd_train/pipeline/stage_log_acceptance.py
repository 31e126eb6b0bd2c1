"""Stage `log_acceptance`: for every `val` prompt, what every arm would have accepted at every
position of the target's greedy answer (exact full-information log), plus a τ heatmap.

The log's prompts come from the `val` split, disjoint from the held-out prompts that decode.py and
the bench report on, so the bandit fitted on this log is never evaluated on its own prompts.
"""

from __future__ import annotations

import copy
import statistics
from collections import defaultdict

import datasets
from rich.progress import Progress
from rich.table import Table

from metasd_train.atomic import atomic_dir
from metasd_train.bandit.chooser import chooser_for
from metasd_train.bandit.replay import by_request, fixed
from metasd_train.bandit.rewards import round_seconds
from metasd_train.config import ngram_spec
from metasd_train.data.acceptance_log import LogTiming, arm_rows, request_rows
from metasd_train.decoding.arms import NoDraftArm
from metasd_train.decoding.assemble import build_arms, make_engine
from metasd_train.decoding.head_arm import forget_hidden_states
from metasd_train.models import decode_dtype, pick_dtype
from metasd_train.models.attention import no_cudnn_attention
from metasd_train.pipeline import plots, ranks
from metasd_train.pipeline.context import StageContext
from metasd_train.pipeline.stage_distill import drafter_specs

SPLIT = "val"  # the log's prompts; "heldout" is for decode.py and the bench
COST_TOKENS = 32  # new tokens each arm decodes, fixed, to time its rounds


def log_prompts(ctx: StageContext) -> list[dict]:
    """Up to decode.heldout_per_domain prompts of each domain from the `val` split."""
    prompts = datasets.load_from_disk(str(ctx.run.require("data") / "prompts"))
    per_domain = defaultdict(list)
    for row in prompts:
        if row["split"] == SPLIT and len(per_domain[row["domain"]]) < ctx.cfg.decode.heldout_per_domain:
            per_domain[row["domain"]].append(row)
    return [r for d in sorted(per_domain) for r in per_domain[d]]


def committed(alone, prompt: list[int], n: int) -> list[int]:
    """The target's own greedy answer (prompt included): what every lossless greedy arm commits.
    `alone` is an engine with only the target (on a GPU: the fast path, graphs and all)."""
    return prompt + alone.generate(prompt, n, chooser_for(None, fixed=0)[0]).tokens


def prompt_rows(ctx, engine, alone, arms, req: int, row: dict, timing: LogTiming) -> list[dict]:
    """One row per (arm, start position) of one prompt, exact against the target's greedy answer."""
    seq = committed(alone, row["prompt_ids"], ctx.cfg.decode.max_new_tokens)
    _, rctx = engine.prefill(row["prompt_ids"], 1)  # the engine's prefill runs without cuDNN itself
    with no_cudnn_attention():  # each prompt's length is a new shape to the target's whole-sequence forwards
        blocks = [arm_rows(arm, seq, len(row["prompt_ids"]), ctx.target) for arm in arms]
    feats = [] if rctx.features is None else rctx.features.float().tolist()
    return request_rows(req, row["domain"], feats, arms, blocks, timing)


def round_costs(rounds) -> tuple[float | None, float]:
    """(draft seconds per drafted token, mean seconds of a round beyond its draft and verify) of one
    arm's rounds, counted as the engine's speed reward counts a round (rewards.round_seconds). The
    first round is left out: it catches the arm up on the whole prompt, which a request pays once.
    Per token is None when the arm drafted nothing there."""
    body = rounds[1:] or rounds
    drafted = sum(r.drafted for r in body)
    per_token = sum(r.t_draft for r in body) / drafted if drafted else None
    rest = statistics.fmean(max(0.0, round_seconds(r) - r.t_draft - r.t_verify) for r in body)
    return per_token, rest


def arm_costs(engine, prompt: list[int], n: int) -> tuple[list[float], list[float]]:
    """Per arm, from the engine's own rounds with that arm fixed (one decode of `n` new tokens of
    `prompt`): round_costs, per token falling back on the arm's timed step where it drafted nothing."""
    per_token, rest = [], []
    for i in range(len(engine.arms)):
        token, other = round_costs(engine.generate(prompt, n, chooser_for(None, fixed=i)[0]).rounds)
        per_token.append(engine.draft_seconds(i) if token is None else token)
        rest.append(other)
    return per_token, rest


def timing(engine, prompt: list[int], n: int) -> LogTiming:
    """Timed once on rank 0 through the engine's own caches (graphs on a GPU) and broadcast, so the rows
    do not depend on how many ranks ran."""
    t = None
    if ranks.is_zero():
        per_token, other = arm_costs(engine, prompt, n)
        t = LogTiming(
            engine.t_step or engine.calibrate(),  # warmup() has timed it already
            engine.forward_seconds(engine.target, engine.max_block),
            engine.max_block,
            per_token,
            other,
        )
    return ranks.broadcast(t)


def publish(ctx: StageContext, rows: list[dict], names: list[str]) -> dict:
    """Write the rows and the τ heatmap; log the τ table; the stage summary."""
    requests = by_request(rows)
    taus = [fixed(requests, a, len(names)) for a in range(len(names))]
    domains = [k for k in taus[0] if k != "all"]
    title = f"τ (tokens per round, greedy) on {len(requests)} {SPLIT} prompts"
    with atomic_dir(ctx.run.stage_dir("log_acceptance")) as out:
        datasets.Dataset.from_list(rows).save_to_disk(str(out / "rounds"))
        plots.heatmap([[t[d]["tau"] for d in domains] for t in taus], names, domains, title, out / "tau_heatmap.png")
    table = Table("drafter", *domains, "all", title=title)
    for name, t in zip(names, taus):
        table.add_row(name, *[f"{t[k]['tau']:.2f}" for k in domains + ["all"]])
    ctx.log(table)
    tau = {n: {k: round(v["tau"], 3) for k, v in t.items()} for n, t in zip(names, taus)}
    return {"rows": len(rows), "split": SPLIT, "prompts": len(requests), "tau": tau}


def timing_engine(ctx: StageContext, specs: list[dict], engine):
    """The engine the costs are timed with: in the dtype decode.py will run in. Training's target is
    fp32 on every CPU, while decoding is bf16 on a CPU with bf16 matrix units, where a verify's cost
    hardly grows with its width (bench/results/cpu-bf16); the rows stay exact from `engine`, and so
    do the prompt features of the bandit's context (decoding computes them in its own dtype)."""
    dtype = pick_dtype(decode_dtype(ctx.cfg.decode.dtype, ctx.device), ctx.device)
    if dtype == ctx.target.dtype or not ranks.is_zero():
        return engine
    target = copy.deepcopy(ctx.target).to(dtype)
    arms = build_arms(specs, target, ctx.tokenizer, ngram_spec(ctx.cfg.drafter))
    timed = make_engine(target, ctx.tokenizer, arms, ctx.cfg.decode)
    timed.warmup()
    return timed


def run(ctx: StageContext) -> dict:
    cfg, d = ctx.cfg, ctx.cfg.drafter
    specs = drafter_specs(ctx.run.require("distill"), d)
    arms = build_arms(specs, ctx.target, ctx.tokenizer, ngram_spec(d))
    engine = make_engine(ctx.target, ctx.tokenizer, arms, cfg.decode)
    alone = make_engine(
        ctx.target, ctx.tokenizer, [NoDraftArm("target_only", ctx.target.config.vocab_size)], cfg.decode
    )
    engine.warmup()
    alone.warmup()
    prompts = log_prompts(ctx)
    n_cost = min(COST_TOKENS, cfg.decode.max_new_tokens)
    times = timing(timing_engine(ctx, specs, engine), prompts[0]["prompt_ids"], n_cost)
    with Progress() as progress:
        task = progress.add_task(f"log_acceptance ({SPLIT} prompts)", total=len(prompts))
        rows = ranks.map_sharded(
            lambda req, chunk: prompt_rows(ctx, engine, alone, arms, req, chunk[0], times),
            prompts,
            on_done=lambda n: progress.advance(task, n * ranks.world()),
        )
    forget_hidden_states()  # the heads' shared target forward holds the target and a sequence's states
    if not ranks.is_zero():
        return {}
    return publish(ctx, rows, [a.name for a in arms])
