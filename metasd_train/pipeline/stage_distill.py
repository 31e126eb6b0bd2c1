"""Stage `distill`: a generalist drafter on the domain mix, then one specialist per domain.

Output layout (read by log_acceptance and export through `drafter_specs`):
distill/generalist/ (the drafter's folder), distill/specialists/<domain>/ (a PEFT adapter over the
generalist, or a whole drafter), distill/acceptance.json, distill/throughput.json, and where
drafter.head.draft_vocab_sizes cut the head's draft vocabulary, distill/draft_vocab.json.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import datasets
import lightning as L
from omegaconf import OmegaConf

from metasd_train.atomic import atomic_dir, write_json
from metasd_train.config import arm_gamma, companion, companion_drafter
from metasd_train.data.datamodule import DistillDataModule
from metasd_train.distill.families import FAMILIES
from metasd_train.distill.trainer import fit, make_trainer, validate
from metasd_train.models.drafters import DRAFTER_KINDS, build_drafter
from metasd_train.models.lora import add_lora
from metasd_train.pipeline import ranks
from metasd_train.pipeline.context import StageContext


def drafter_specs(distill_dir: Path, drafter_cfg) -> list[dict]:
    """Every drafter a distill stage made: {name, arm, kind, path, gamma, adapter?}."""
    arm = DRAFTER_KINDS[drafter_cfg.kind].arm
    base = {"arm": arm, "kind": drafter_cfg.kind, "path": str(distill_dir / "generalist")}
    specs = [{**base, "name": "generalist"}]
    root = distill_dir / "specialists"
    for d in sorted(root.iterdir()) if root.exists() else []:
        if (d / "adapter_config.json").exists():
            specs.append({**base, "name": d.name, "kind": "lora", "adapter": str(d)})
        else:
            specs.append({**base, "name": d.name, "path": str(d)})
    for name in drafter_cfg.companions:
        c = companion(drafter_cfg, name)
        kind = {"arm": DRAFTER_KINDS[c.kind].arm, "kind": c.kind}
        specs.append({**kind, "name": name, "path": str(distill_dir / "companions" / name)})
    return [{**s, "gamma": arm_gamma(drafter_cfg, s["name"])} for s in specs]


def _train(ctx, student, dm, name: str, steps: int, lr: float, drafter=None) -> dict:
    c, d = ctx.cfg.distill, drafter or ctx.cfg.drafter
    family = FAMILIES[DRAFTER_KINDS[d.kind].arm]
    L.seed_everything(ctx.cfg.seed, verbose=False)
    module = family.module(student, ctx.target, dm.val_domains, c, d, lr, steps)
    ckpt = ctx.run.path / ".checkpoints" / name
    trainer = make_trainer(
        OmegaConf.to_container(ctx.cfg.trainer),
        ctx.run.path / "logs",
        name,
        steps,
        min(c.val_every, steps),
        ckpt,
        c.accumulate,
        c.checkpoint_every,
        family.monitor,
    )
    ctx.extras.setdefault("throughput", {})[name] = fit(module, dm, trainer, ckpt)
    return validate(module, dm, trainer)


def cut_draft_vocab(ctx, student, examples, dm, full: dict):
    """drafter.head.draft_vocab_sizes: the trained generalist head cut to the smallest listed draft
    vocabulary whose validation accepted length stays within drafter.head.draft_vocab_tolerance of
    its own (FR-Spec: the most frequent ids of its vocabulary kept, no retraining; a smaller LM head
    makes every draft step cheaper).

    The choice is remembered beside the checkpoints before any specialist trains on the cut head, so
    a resumed stage (on another process count, where validation batches differ) cuts to the same
    size its specialists' checkpoints have. Returns (head, its validation rows, {"accept_len": {K:
    length}, "kept": K, "rows": the full head's rows} or None).
    """
    c, d = ctx.cfg.distill, ctx.cfg.drafter
    if d.kind != "head" or "all" not in full:  # no validation row with a response position: nothing to compare
        return student, full, None
    size = student.config.draft_vocab_size
    sizes = sorted({int(k) for k in d.head.draft_vocab_sizes if int(k) < size})
    if not sizes:
        return student, full, None
    from metasd_train.models.drafters import answer_counts
    from metasd_train.models.head_restrict import restrict_head
    from metasd_train.models.tokenizers import eos_ids

    counts = answer_counts(examples, ctx.target.config.vocab_size)
    eos, family = eos_ids(ctx.target, ctx.tokenizer), FAMILIES[DRAFTER_KINDS[d.kind].arm]
    memo = ctx.run.path / ".checkpoints" / "draft_vocab.json"
    chosen = json.loads(memo.read_text())["kept"] if memo.exists() else None
    rows, floor = {size: full}, (1 - d.head.draft_vocab_tolerance) * full["all"]["accept_len"]
    kept, kept_rows = student, full
    remembered = [k for k in [chosen] if k != size]  # a resume: the size its specialists were trained on
    for k in sizes if chosen is None else remembered:  # smallest first: the first that keeps the length
        small = restrict_head(student, counts, k, always=eos)
        module = family.module(small, ctx.target, dm.val_domains, c, d, c.lr, 1)
        trainer = make_trainer(OmegaConf.to_container(ctx.cfg.trainer), ctx.run.path / "logs", f"draft-vocab-{k}")
        rows[k] = validate(module, dm, trainer)
        if chosen is not None or rows[k]["all"]["accept_len"] >= floor:
            kept, kept_rows = small, rows[k]
            break
    record = {
        "accept_len": {k: round(r["all"]["accept_len"], 4) for k, r in sorted(rows.items())},
        "kept": kept.config.draft_vocab_size,
        "rows": full,
    }
    if chosen is None and ranks.is_zero():
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_json(memo, {"kept": record["kept"]})  # atomic; every rank chose the same (synced metrics)
    return kept, kept_rows, record


def specialist(student, d):
    """A specialist to train from the generalist: a LoRA adapter over it, or a whole copy."""
    if d.specialists == "lora":
        return add_lora(student, d.lora.r, d.lora.alpha, d.lora.dropout, list(d.lora.target_modules))
    return copy.deepcopy(student)


def run(ctx: StageContext) -> dict:
    c, d = ctx.cfg.distill, ctx.cfg.drafter
    examples = datasets.load_from_disk(str(ctx.run.require("data") / "examples"))
    domains = sorted(set(examples["domain"]))
    pad = ctx.tokenizer.pad_token_id
    all_dm = DistillDataModule(examples, domains, c.batch_size, pad, ctx.cfg.seed, c.length_groups)
    student = build_drafter(ctx.target, d, ctx.cfg.seed, ctx.device, ctx.tokenizer, examples)
    family = FAMILIES[DRAFTER_KINDS[d.kind].arm]
    init_trainer = make_trainer(OmegaConf.to_container(ctx.cfg.trainer), ctx.run.path / "logs", "init")
    init = family.module(student, ctx.target, domains, c, d, c.lr, 1)
    table = {"init": validate(init, all_dm, init_trainer)}
    table["generalist"] = _train(ctx, student, all_dm, "generalist", c.max_steps, c.lr)
    student, table["generalist"], vocab = cut_draft_vocab(ctx, student, examples, all_dm, table["generalist"])
    specialists = {}
    for domain in domains if d.specialists != "none" else []:
        dm = DistillDataModule(examples, [domain], c.batch_size, pad, ctx.cfg.seed, c.length_groups)
        spec = specialist(student, d)
        lr = c.lora_lr if d.specialists == "lora" else c.lr
        table[domain] = _train(ctx, spec, dm, f"specialist-{domain}", c.specialist_steps, lr)
        specialists[domain] = spec
    companions = {}
    for name in d.companions:
        cd = companion_drafter(d, name)
        companions[name] = (cd, build_drafter(ctx.target, cd, ctx.cfg.seed, ctx.device, ctx.tokenizer, examples))
        if (steps := companion(d, name).steps) > 0:
            table[name] = _train(ctx, companions[name][1], all_dm, f"companion-{name}", steps, c.lr, cd)
    if not ranks.is_zero():
        return {}
    with atomic_dir(ctx.run.stage_dir("distill")) as out:
        family.save(student, out / "generalist", ctx.tokenizer)
        for domain, spec in specialists.items():
            family.save(spec, out / "specialists" / domain, ctx.tokenizer)
        for name, (cd, model) in companions.items():
            FAMILIES[DRAFTER_KINDS[cd.kind].arm].save(model, out / "companions" / name, ctx.tokenizer)
        write_json(out / "acceptance.json", table)
        write_json(out / "throughput.json", ctx.extras["throughput"])
        if vocab is not None:
            write_json(out / "draft_vocab.json", vocab)
    return {
        "train_tokens_per_s": {k: round(v["tokens_per_s"]) for k, v in ctx.extras["throughput"].items()},
        "val_acceptance": {
            k: {dd: round(v["acceptance"], 4) for dd, v in t.items() if "acceptance" in v} for k, t in table.items()
        },
        **({"val_accept_len": {k: round(t["all"]["accept_len"], 3) for k, t in table.items() if "all" in t}}),
        **({"draft_vocab": {k: vocab[k] for k in ("kept", "accept_len")}} if vocab is not None else {}),
    }
