"""Run the stages of a recipe in order, skipping those already finished (resume = same command)."""

from __future__ import annotations

import importlib
import os
import time

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax

from metasd_train.config import STAGES
from metasd_train.pipeline import ranks
from metasd_train.pipeline.context import StageContext
from metasd_train.pipeline.run_dir import RunDir


def quiet_libraries() -> None:
    import logging
    import warnings

    import lightning  # noqa: F401  (it sets its loggers' level on import; set ours after)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|eval mode|does not have many workers|logging interval).*")


SHARDED = ("data", "distill", "log_acceptance")  # every rank takes part; the others run on rank 0 alone


def stage_fn(stage: str):
    return importlib.import_module(f"metasd_train.pipeline.stage_{stage}").run


def train(cfg: DictConfig, root: str = "runs", console: Console | None = None) -> RunDir:
    """What `python train.py` does: returns the run directory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    console = console or Console()
    quiet_libraries()
    import datasets

    datasets.disable_progress_bars()
    check_sources(cfg)  # a bad model path fails before any run directory is made
    ranks.launch(cfg.trainer)  # several devices: every rank runs from here on
    if not ranks.is_zero():
        console.quiet = True
    run = RunDir(ranks.broadcast(str(RunDir.create_or_open(cfg, root).path) if ranks.is_zero() else None))
    console.rule(f"metasd-train · recipe={cfg.recipe} · {run.path}")
    console.print(Syntax(OmegaConf.to_yaml(cfg), "yaml", theme="ansi_dark"))
    ctx = StageContext(cfg, run, console)
    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        if run.is_done(stage):
            console.print(f"[green]✓ {stage}[/] already done, skipped")
            continue
        console.rule(f"stage {stage}")
        start, summary = time.perf_counter(), {}
        if stage in SHARDED or ranks.is_zero():
            summary = stage_fn(stage)(ctx)
        if ranks.is_zero():
            run.mark_done(stage, time.perf_counter() - start, summary)
        ranks.barrier()
        console.print(f"[green]✓ {stage}[/] in {time.perf_counter() - start:.1f}s: {summary}")
    if ranks.is_zero():
        link_latest(run)
    console.print(f"run directory: {run.path}")
    return run


def link_latest(run: RunDir) -> None:
    """runs/<recipe>/latest -> this run (replaced atomically)."""
    link = run.path.parent / "latest"
    tmp = run.path.parent / ".latest.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run.path.name)
    os.replace(tmp, link)


def check_sources(cfg: DictConfig) -> None:
    """Every model the config names resolves (local path, .gguf, packaged name, random) or one error line."""
    from metasd_train.models import resolve_source

    resolve_source(cfg.target.name)
    if cfg.target.name == "random" and cfg.target.tokenizer:
        resolve_source(cfg.target.tokenizer)
    if cfg.drafter.kind == "pretrained":
        resolve_source(cfg.drafter.path)
