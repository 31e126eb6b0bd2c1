"""Stage `distill`: a generalist drafter on the domain mix, then one specialist per domain."""

from __future__ import annotations

import datasets
import lightning as L
from omegaconf import OmegaConf

from metasd_train.atomic import atomic_dir, write_json
from metasd_train.data.datamodule import DistillDataModule
from metasd_train.distill.module import DistillModule
from metasd_train.distill.trainer import fit, make_trainer, validate
from metasd_train.models import load_model
from metasd_train.models.drafters import fresh, truncated
from metasd_train.models.lora import add_lora
from metasd_train.models.tokenizers import check_tokenizers, check_vocab
from metasd_train.pipeline import ranks
from metasd_train.pipeline.context import StageContext


def build_drafter(ctx: StageContext):
    """The student, in fp32 master weights (bf16-mixed autocasts its compute; the teacher stays bf16)."""
    d = ctx.cfg.drafter
    if d.kind == "truncated":
        return truncated(ctx.target, d.layers, d.freeze_embeddings).float()
    if d.kind == "fresh":
        return fresh(ctx.target, OmegaConf.to_container(d.config), ctx.cfg.seed).float()
    loaded = load_model({"name": d.path, "dtype": "fp32"}, ctx.device)
    check_tokenizers(ctx.tokenizer, loaded.tokenizer, f"drafter {d.path}")
    check_vocab(ctx.target.config.vocab_size, loaded.model.config.vocab_size, f"drafter {d.path}", len(ctx.tokenizer))
    return loaded.model


def _train(ctx, student, dm, name: str, steps: int, lr: float) -> dict:
    c = ctx.cfg.distill
    L.seed_everything(ctx.cfg.seed, verbose=False)
    module = DistillModule(
        student, ctx.target, dm.val_domains, c.loss, c.ce_weight, lr, c.weight_decay, min(c.warmup_steps, steps), steps
    )
    ckpt = ctx.run.path / ".checkpoints" / name
    trainer = make_trainer(
        OmegaConf.to_container(ctx.cfg.trainer),
        ctx.run.path / "logs",
        name,
        steps,
        min(c.val_every, steps),
        ckpt,
        c.accumulate,
    )
    ctx.extras.setdefault("throughput", {})[name] = fit(module, dm, trainer, ckpt)
    return validate(module, dm, trainer)


def run(ctx: StageContext) -> dict:
    c, d = ctx.cfg.distill, ctx.cfg.drafter
    examples = datasets.load_from_disk(str(ctx.run.require("data") / "examples"))
    domains = sorted(set(examples["domain"]))
    pad = ctx.tokenizer.pad_token_id
    all_dm = DistillDataModule(examples, domains, c.batch_size, pad, ctx.cfg.seed)
    student = build_drafter(ctx)
    init_trainer = make_trainer(OmegaConf.to_container(ctx.cfg.trainer), ctx.run.path / "logs", "init")
    table = {"init": validate(DistillModule(student, ctx.target, domains), all_dm, init_trainer)}
    table["generalist"] = _train(ctx, student, all_dm, "generalist", c.max_steps, c.lr)
    specialists = {}
    for domain in domains if d.specialists != "none" else []:
        dm = DistillDataModule(examples, [domain], c.batch_size, pad, ctx.cfg.seed)
        if d.specialists == "lora":
            spec = add_lora(student, d.lora.r, d.lora.alpha, d.lora.dropout, list(d.lora.target_modules))
        else:
            import copy

            spec = copy.deepcopy(student)
        lr = c.lora_lr if d.specialists == "lora" else c.lr
        table[domain] = _train(ctx, spec, dm, f"specialist-{domain}", c.specialist_steps, lr)
        specialists[domain] = spec
    if not ranks.is_zero():
        return {}
    with atomic_dir(ctx.run.stage_dir("distill")) as out:
        student.save_pretrained(out / "generalist")
        ctx.tokenizer.save_pretrained(out / "generalist")
        for domain, spec in specialists.items():
            spec.save_pretrained(out / "specialists" / domain)  # PEFT format for LoRA
        write_json(out / "acceptance.json", table)
        write_json(out / "throughput.json", ctx.extras["throughput"])
    ctx.extras["distill_table"] = table
    return {
        "train_tokens_per_s": {k: round(v["tokens_per_s"]) for k, v in ctx.extras["throughput"].items()},
        "val_acceptance": {k: {dd: round(v["acceptance"], 4) for dd, v in t.items()} for k, t in table.items()},
    }
