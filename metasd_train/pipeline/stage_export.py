"""Stage `export`: each drafter as a standard HF folder + model card, adapters in PEFT format,
the bandit state, and the ensemble manifest decode.py loads."""

from __future__ import annotations

import json
import shutil

from omegaconf import OmegaConf

from metasd_train.atomic import atomic_dir, write_json, write_text
from metasd_train.config import arm_gamma
from metasd_train.export.card import model_card
from metasd_train.export.fingerprint import fingerprint
from metasd_train.models import pick_dtype
from metasd_train.models.loading import HUB_IDS
from metasd_train.pipeline.context import StageContext
from metasd_train.pipeline.ensemble import distill_specs, load_drafter


def run(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    distill = ctx.run.require("distill")
    bandit = ctx.run.require("fit_bandit")
    acceptance = json.loads((distill / "acceptance.json").read_text())
    tau = ctx.run.manifest()["stages"].get("log_acceptance", {}).get("summary", {}).get("tau", {})
    dtype = pick_dtype(cfg.export.dtype, ctx.device)
    domains = OmegaConf.to_container(cfg.data.domains)
    drafters = []
    with atomic_dir(ctx.run.stage_dir("export")) as out:
        for spec in distill_specs(distill):
            name = spec["name"]
            model = load_drafter(spec, "cpu", dtype)
            model.generation_config.num_assistant_tokens = arm_gamma(cfg.drafter, name)
            model.save_pretrained(out / name)
            ctx.tokenizer.save_pretrained(out / name)
            kind = "lora" if spec.get("adapter") else cfg.drafter.kind
            if spec.get("adapter"):
                shutil.copytree(spec["adapter"], out / name / "adapter")
            base = HUB_IDS.get(cfg.target.name, cfg.target.name)
            write_text(
                out / name / "README.md",
                model_card(
                    name,
                    base,
                    cfg.recipe,
                    cfg.export.license,
                    domains,
                    acceptance.get(name, {}),
                    tau.get(name, {}),
                    kind,
                ),
            )
            drafters.append({"name": name, "path": name, "gamma": arm_gamma(cfg.drafter, name), "kind": kind})
        shutil.copytree(bandit, out / "bandit")
        write_json(
            out / "ensemble.json",
            {
                "format": "metasd-ensemble/1",
                "target": {
                    "name": cfg.target.name,
                    "fingerprint": fingerprint(ctx.target),
                    **(
                        {
                            "config": OmegaConf.to_container(cfg.target.config),
                            "seed": cfg.target.seed,
                            "tokenizer": cfg.target.tokenizer,
                        }
                        if cfg.target.name == "random"
                        else {}
                    ),
                },
                "drafters": drafters,
                "ngram": {"gamma": arm_gamma(cfg.drafter, "ngram")} if cfg.drafter.ngram else None,
                "bandit": "bandit",
                "decode": OmegaConf.to_container(cfg.decode),
                "dtype": cfg.export.dtype,
            },
        )
    return {"drafters": [d["name"] for d in drafters], "dtype": cfg.export.dtype}
