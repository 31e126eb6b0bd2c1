"""Stage `data`: domain prompts, fixed splits, and the target's answers, as Arrow datasets."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import datasets
from omegaconf import OmegaConf
from rich.progress import Progress

from metasd_train.atomic import atomic_dir, write_text
from metasd_train.data.prompts import domain_prompts
from metasd_train.data.selfdistill import answer
from metasd_train.pipeline import ranks
from metasd_train.pipeline.context import StageContext


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg.data
    rows = domain_prompts(
        OmegaConf.to_container(cfg.domains), ctx.tokenizer, cfg.max_prompt_tokens, list(cfg.split), cfg.seed
    )
    partial = ctx.run.path / ".data.partial"  # finished domains survive a kill
    kinds = [("greedy", 0.0)] + ([("sampled", cfg.temperature)] if cfg.sampled else [])
    with Progress(transient=False) as progress:
        for domain in cfg.domains:
            for kind, temperature in kinds:
                shard = partial / f"{domain}-{kind}"
                if shard.exists():
                    continue
                todo = [r for r in rows if r["domain"] == domain and r["split"] != "heldout"]
                task = progress.add_task(f"{domain} ({kind})", total=len(todo))
                responses = ranks.map_sharded(  # whole batches per rank: the same batches for any rank count
                    lambda i, batch, t=temperature: answer(
                        ctx.target, ctx.tokenizer, batch, cfg.max_new_tokens, cfg.batch_size, t, seed=cfg.seed + i
                    ),
                    [r["prompt_ids"] for r in todo],
                    chunk=cfg.batch_size,
                    on_done=lambda n, task=task: progress.advance(task, n * ranks.world()),
                )
                records = [{**r, "kind": kind, "response_ids": resp} for r, resp in zip(todo, responses)]
                if ranks.is_zero():
                    with atomic_dir(shard) as tmp:
                        datasets.Dataset.from_list(records).save_to_disk(str(tmp))
                ranks.barrier()
    if not ranks.is_zero():
        return {}
    examples = datasets.concatenate_datasets([datasets.load_from_disk(str(p)) for p in sorted(partial.iterdir())])
    with atomic_dir(ctx.run.stage_dir("data")) as out:
        datasets.Dataset.from_list(rows).save_to_disk(str(out / "prompts"))
        examples.save_to_disk(str(out / "examples"))
        write_heldout(rows, ctx.cfg.decode.heldout_per_domain, out / "heldout.jsonl")
    shutil.rmtree(partial)
    counts = Counter((r["domain"], r["split"]) for r in rows)
    return {"prompts": {f"{d}/{s}": n for (d, s), n in sorted(counts.items())}, "examples": len(examples)}


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
