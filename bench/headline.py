"""bench/results/headline.json: one entry per recipe, machine-written by each full bench run (read,
merge, atomic write), never edited by hand. metasd_* is the recipe's default policy as shipped (the
policy of the export's bandit.json, in its exported mode); fields that do not apply are null."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from bench.configs import HF_COMPILE, ORACLE, TARGET_ALONE, fixed_name, sampled_name, shipped_row
from bench.fastpath import replay_ms
from bench.harness import Bench, card_name, engine_label
from bench.headstep import chained_step_ms
from metasd_train.atomic import write_json
from metasd_train.errors import UserError

PATH = Path(__file__).resolve().parent / "results" / "headline.json"
KEYS = (
    "card",
    "commit",
    "prompts",
    "hf_compile_tok_s",
    "target_alone_over_hf_compile",
    "best_fixed_arm",
    "best_fixed_over_hf_compile",
    "metasd_policy",
    "metasd_over_hf_compile",
    "metasd_over_best_fixed",
    "metasd_over_oracle",
    "sampled_metasd_over_target_alone",
    "startup_s",
    "head_step_over_target_step",
    "head_tau",
    "head_over_hf_compile",
)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def recipe_of(b: Bench) -> str:
    """The `recipe:` of the run directory's config.yaml (the export folder's parent)."""
    path = Path(b.ens.folder).parent / "config.yaml"
    if not path.is_file():
        raise UserError(f"headline.json needs the run's recipe: {path} is missing; pass run=RUN_DIR or headline=")
    return str(OmegaConf.load(path).get("recipe", "none"))


def best_fixed(b: Bench) -> str | None:
    ran = [a for a in b.ens.arm_names if fixed_name(a) in b.results]
    return max(ran, key=lambda a: b.tok_s(fixed_name(a))) if ran else None


def startup_s(b: Bench) -> float | None:
    """Ensemble load + build + warm-up of the engine the shipped policy decodes with."""
    built = b.builds.get(b.shipped_engine)
    return b.startup["ensemble_load_s"] + sum(built.values()) if built else None


def head_fields(b: Bench, hf: float | None) -> dict:
    """The first arm whose kind is "head": its fixed-arm τ and tok/s, and its draft step over a target step."""
    heads = [i for i, a in enumerate(b.ens.arms) if a.kind == "head"]
    row = b.results.get(fixed_name(b.ens.arm_names[heads[0]])) if heads else None
    step = None
    engine = b.engines.get(engine_label())
    if heads and engine is not None and hasattr(engine.runtimes[heads[0]], "step_seconds"):
        rt = engine.runtimes[heads[0]]
        if rt.graphs and rt.gamma > 1:  # a link of the captured greedy chain over a width-1 target replay
            step = ratio(chained_step_ms(rt, rt.gamma), replay_ms(engine.target, 1))
        else:
            step = ratio(rt.step_seconds(), engine.t_step)
    return {
        "head_step_over_target_step": step,
        "head_tau": row.summary["all"]["tau"] if row else None,
        "head_over_hf_compile": ratio(row.summary["all"]["tokens_per_s"], hf) if row else None,
    }


def entry(b: Bench) -> dict:
    hf, metasd, best = b.tok_s(HF_COMPILE), b.tok_s(shipped_row(b)), best_fixed(b)
    best_tok_s = b.tok_s(fixed_name(best)) if best else None
    t = b.args.sampled_t
    out = {
        "card": card_name(),
        "commit": b.args.commit,
        "prompts": len(b.prompts),
        "hf_compile_tok_s": hf,
        "target_alone_over_hf_compile": ratio(b.tok_s(TARGET_ALONE), hf),
        "best_fixed_arm": best,
        "best_fixed_over_hf_compile": ratio(best_tok_s, hf),
        "metasd_policy": b.shipped()["policy"],
        "metasd_over_hf_compile": ratio(metasd, hf),
        "metasd_over_best_fixed": ratio(metasd, best_tok_s),
        "metasd_over_oracle": ratio(metasd, b.tok_s(ORACLE)),
        "sampled_metasd_over_target_alone": ratio(
            b.tok_s(sampled_name(shipped_row(b), t)), b.tok_s(sampled_name(TARGET_ALONE, t))
        ),
        "startup_s": startup_s(b),
        **head_fields(b, hf),
    }
    return out


def write_headline(path: Path, recipe: str, new: dict) -> None:
    """Replace `recipe`'s entry of the file at `path`, keeping every other recipe's."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[recipe] = new
    write_json(path, dict(sorted(data.items())))
