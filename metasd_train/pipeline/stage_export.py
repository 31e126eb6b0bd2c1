"""Stage `export`: each drafter as a standard folder + model card (HF causal LMs, PEFT adapters,
EAGLE-3-layout heads), the bandit state, and the ensemble manifest decode.py loads."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from metasd_train.atomic import atomic_dir, write_text
from metasd_train.config import ngram_spec
from metasd_train.decoding.assemble import load_drafter, load_head_spec
from metasd_train.export.card import model_card
from metasd_train.export.ensemble import write_ensemble
from metasd_train.export.fingerprint import fingerprint
from metasd_train.models import pick_dtype
from metasd_train.models.loading import PACKAGED
from metasd_train.pipeline.context import StageContext
from metasd_train.pipeline.stage_distill import drafter_specs


def export_model(ctx: StageContext, spec: dict, folder: Path, dtype) -> None:
    """An HF causal LM folder (+ the PEFT adapter it was merged from, under adapter/)."""
    model = load_drafter(spec, "cpu", dtype)
    model.generation_config.num_assistant_tokens = spec["gamma"]
    model.save_pretrained(folder)
    ctx.tokenizer.save_pretrained(folder)
    if spec.get("adapter"):
        shutil.copytree(spec["adapter"], folder / "adapter")


def export_head(ctx: StageContext, spec: dict, folder: Path, dtype) -> None:
    """An EAGLE-3-layout head folder (SpecForge/SGLang key names); LoRA specialists merged in."""
    from metasd_train.models.head_io import save_head

    save_head(load_head_spec(spec, "cpu", dtype), folder)


EXPORTERS: dict[str, Callable] = {"model": export_model, "head": export_head}


def target_entry(ctx: StageContext) -> dict:
    t = ctx.cfg.target
    entry = {"name": t.name, "fingerprint": fingerprint(ctx.target)}
    if t.name == "random":
        entry.update(config=OmegaConf.to_container(t.config), seed=t.seed, tokenizer=t.tokenizer)
    return entry


def card(ctx: StageContext, spec: dict, acceptance: dict, tau: dict) -> str:
    cfg = ctx.cfg
    return model_card(
        spec["name"],
        PACKAGED[cfg.target.name].hub_id if cfg.target.name in PACKAGED else cfg.target.name,
        cfg.recipe,
        cfg.export.license,
        OmegaConf.to_container(cfg.data.domains),
        acceptance.get(spec["name"], {}),
        tau.get(spec["name"], {}),
        spec["kind"],
    )


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    distill, bandit = ctx.run.require("distill"), ctx.run.require("fit_bandit")
    acceptance = json.loads((distill / "acceptance.json").read_text())
    tau = ctx.run.manifest()["stages"].get("log_acceptance", {}).get("summary", {}).get("tau", {})
    dtype = pick_dtype(cfg.export.dtype, ctx.device)
    drafters = []
    with atomic_dir(ctx.run.stage_dir("export")) as out:
        for spec in drafter_specs(distill, cfg.drafter):
            EXPORTERS[spec["arm"]](ctx, spec, out / spec["name"], dtype)
            write_text(out / spec["name"] / "README.md", card(ctx, spec, acceptance, tau))
            entry = {k: spec[k] for k in ("name", "arm", "kind", "gamma")}
            drafters.append({**entry, "path": spec["name"]})
        shutil.copytree(bandit, out / "bandit")
        write_ensemble(
            out,
            target_entry(ctx),
            drafters,
            ngram_spec(cfg.drafter),
            OmegaConf.to_container(cfg.decode),
            cfg.export.dtype,
        )
    return {"drafters": [d["name"] for d in drafters], "dtype": cfg.export.dtype}
