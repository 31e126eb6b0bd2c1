"""Stage `data`: domain prompts, fixed splits, and the target's answers, as Arrow datasets."""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
from omegaconf import OmegaConf
from rich.progress import Progress

from metasd_train.atomic import atomic_dir, write_text
from metasd_train.data.prompts import domain_prompts, written_examples
from metasd_train.data.selfdistill import answer
from metasd_train.errors import UserError
from metasd_train.models.tokenizers import eos_ids
from metasd_train.pipeline import ranks
from metasd_train.pipeline.context import StageContext


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg.data
    check_context(cfg, ctx.target)
    rows = domain_prompts(
        OmegaConf.to_container(cfg.domains), ctx.tokenizer, cfg.max_prompt_tokens, list(cfg.split), cfg.seed
    )
    check_heldout(rows, cfg)
    written = written_rows(ctx, rows)  # before any generation: a bad written source fails at once
    kinds = [("greedy", 0.0)] + ([("sampled", cfg.temperature)] if cfg.sampled else [])
    partial = partial_dir(ctx)  # finished shards survive a kill
    shards = [partial / f"{domain}-{kind}" for domain in cfg.domains for kind, _ in kinds]
    with Progress(transient=False) as progress:
        for shard, (domain, (kind, temperature)) in zip(shards, itertools.product(cfg.domains, kinds)):
            if not shard.is_dir():
                write_shard(ctx, shard, [r for r in rows if r["domain"] == domain], kind, temperature, progress)
            ranks.barrier()
    if not ranks.is_zero():
        return {}
    generated = [datasets.load_from_disk(str(p)) for p in sorted(shards)]
    examples = datasets.concatenate_datasets(generated + ([datasets.Dataset.from_list(written)] if written else []))
    with atomic_dir(ctx.run.stage_dir("data")) as out:
        datasets.Dataset.from_list(rows).save_to_disk(str(out / "prompts"))
        examples.save_to_disk(str(out / "examples"))
        write_heldout(rows, ctx.cfg.decode.heldout_per_domain, out / "heldout.jsonl")
    shutil.rmtree(partial)
    counts = Counter((r["domain"], r["split"]) for r in rows)
    got = Counter(r["domain"] for r in written)
    summary = {"prompts": {f"{d}/{s}": n for (d, s), n in sorted(counts.items())}, "examples": len(examples)}
    if cfg.written:  # fewer than asked when the source runs out of prompts that fit
        summary["written"] = {d: f"{got[d]} of {w.n}" for d, w in cfg.written.items()}
    return summary


def written_rows(ctx: StageContext, rows: list[dict]) -> list[dict]:
    """`data.written`'s examples: responses from the source, none of them a domain prompt of any split."""
    cfg = ctx.cfg.data
    if not cfg.written:
        return []
    eos = eos_ids(ctx.target, ctx.tokenizer)
    end = ctx.tokenizer.eos_token_id if ctx.tokenizer.eos_token_id in eos else eos[0]
    taken = {r["prompt"] for r in rows if isinstance(r["prompt"], str)}
    return written_examples(OmegaConf.to_container(cfg.written), ctx.tokenizer, cfg.max_prompt_tokens,
                            cfg.max_new_tokens, end, taken, cfg.seed)  # fmt: skip


def write_shard(ctx: StageContext, shard: Path, rows: list[dict], kind: str, temperature: float, progress) -> None:
    """The target's answers to one domain's train/val prompts, as one Arrow shard (published whole)."""
    cfg = ctx.cfg.data
    todo = [r for r in rows if r["split"] != "heldout"]
    task = progress.add_task(f"{shard.name.rpartition('-')[0]} ({kind})", total=len(todo))
    responses = ranks.map_sharded(  # whole batches per rank: the same batches for any rank count
        lambda i, batch: answer(
            ctx.target, ctx.tokenizer, batch, cfg.max_new_tokens, cfg.batch_size, temperature, seed=cfg.seed + i
        ),
        [r["prompt_ids"] for r in todo],
        chunk=cfg.batch_size,
        on_done=lambda n: progress.advance(task, n * ranks.world()),
    )
    records = [{**r, "kind": kind, "response_ids": resp} for r, resp in zip(todo, responses)]
    if ranks.is_zero():
        with atomic_dir(shard) as tmp:
            datasets.Dataset.from_list(records).save_to_disk(str(tmp))


def partial_dir(ctx: StageContext) -> Path:
    """The folder of finished shards, kept across kills only while the settings they came from hold."""
    partial = ctx.run.path / ".data.partial"
    keys = {k: OmegaConf.select(ctx.cfg, k) for k in ("seed", "target", "data")}
    keys["data"] = {k: v for k, v in OmegaConf.to_container(keys["data"]).items() if k != "written"}  # not in shards
    stamp = OmegaConf.to_yaml(OmegaConf.create({k: v for k, v in keys.items()}))
    if ranks.is_zero():
        if partial.is_dir() and read_or_none(partial / "settings.yaml") != stamp:
            shutil.rmtree(partial)  # shards of other settings: never mixed into this run's data
        if not partial.is_dir():
            with atomic_dir(partial) as tmp:
                write_text(tmp / "settings.yaml", stamp)
    ranks.barrier()
    return partial


def check_context(cfg, target) -> None:
    """Prompt + answer must fit the target's context (its max_position_embeddings)."""
    context = getattr(target.config, "max_position_embeddings", None)
    if context and cfg.max_prompt_tokens + cfg.max_new_tokens > context:
        raise UserError(
            f"data.max_prompt_tokens={cfg.max_prompt_tokens} + data.max_new_tokens={cfg.max_new_tokens} exceed "
            f"the target's context of {context} tokens; lower them"
        )


def check_heldout(rows: list[dict], cfg) -> None:
    """Every domain keeps a held-out prompt (fewer prompts than data.domains.*.n may fit)."""
    for domain in cfg.domains:
        split = Counter(r["split"] for r in rows if r["domain"] == domain)
        if not split["heldout"] or not split["train"]:
            raise UserError(
                f"data.domains.{domain}: {sum(split.values())} prompts fit max_prompt_tokens="
                f"{cfg.max_prompt_tokens}, leaving {split['train']} training and {split['heldout']} held-out; "
                "raise n or max_prompt_tokens, or change data.split"
            )


def read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def write_heldout(rows: list[dict], per_domain: int, path) -> None:
    """Held-out prompts in question.jsonl format (question_id, category, turns): for decode.py and bench/."""
    taken: dict[str, int] = {}
    lines = []
    for r in rows:
        if r["split"] == "heldout" and taken.get(r["domain"], 0) < per_domain:
            taken[r["domain"]] = taken.get(r["domain"], 0) + 1
            lines.append(
                json.dumps({"question_id": f"{r['domain']}-{r['id']}", "category": r["domain"], "turns": [r["prompt"]]})
            )
    write_text(path, "\n".join(lines) + "\n")
