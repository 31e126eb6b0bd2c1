"""Run the stages of a recipe in order, skipping those already finished (resume = same command)."""

from __future__ import annotations

import os
import time

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax

from metasd_train.config import STAGES, companion
from metasd_train.errors import UserError
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


def stage_runs() -> dict:
    """Stage name -> its function, in the order they run (the names are config.STAGES)."""
    from metasd_train.pipeline import stage_data, stage_distill, stage_export, stage_fit_bandit, stage_log_acceptance

    runs = {
        "data": stage_data.run,
        "distill": stage_distill.run,
        "log_acceptance": stage_log_acceptance.run,
        "fit_bandit": stage_fit_bandit.run,
        "export": stage_export.run,
    }
    assert tuple(runs) == STAGES, "config.STAGES and the runner's stages must list the same stages in order"
    return runs


def train(cfg: DictConfig, root: str = "runs", console: Console | None = None) -> RunDir:
    """What `python train.py` does: returns the run directory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    console = console or Console()
    quiet_libraries()
    import datasets

    from metasd_train.distill.trainer import check_trainer

    datasets.disable_progress_bars()
    check_sources(cfg)  # a bad model path fails before any run directory is made
    check_trainer(OmegaConf.to_container(cfg.trainer))  # so do Lightning's own config errors
    ranks.launch(cfg.trainer)  # several devices: every rank runs from here on
    if not ranks.is_zero():
        console.quiet = True
    run = open_run(cfg, root)
    try:
        run_stages(cfg, run, console)
    finally:
        run.close()  # the lock goes with the process anyway; this frees it for a caller that goes on
    console.print(f"run directory: {run.path}")
    return run


def open_run(cfg: DictConfig, root: str) -> RunDir:
    """Rank 0 opens and locks the run directory (ranks started before this hold no lock); every rank
    gets its path, or the same one error line."""
    opened = on_zero(lambda: RunDir.create_or_open(cfg, root))
    path = ranks.broadcast(str(opened.path) if opened else None)
    return opened or RunDir(path)


def run_stages(cfg: DictConfig, run: RunDir, console: Console) -> None:
    console.rule(f"metasd-train · recipe={cfg.recipe} · {run.path}")
    console.print(Syntax(OmegaConf.to_yaml(cfg), "yaml", theme="ansi_dark"))
    ctx = StageContext(cfg, run, console)
    todo = [s for s in stage_runs() if s in cfg.stages and not run.is_done(s)]
    if set(todo) & set(TARGET_STAGES):
        on_zero(lambda: run.check_target(target_fingerprint(ctx), cfg.target.name))
    for stage, stage_run in stage_runs().items():
        if stage not in cfg.stages:
            continue
        if run.is_done(stage):
            console.print(f"[green]✓ {stage}[/] already done, skipped")
            continue
        console.rule(f"stage {stage}")
        start, summary = time.perf_counter(), {}
        if stage in SHARDED or ranks.is_zero():
            summary = stage_run(ctx)
        if ranks.is_zero():
            run.mark_done(stage, time.perf_counter() - start, summary)
        ranks.barrier()
        console.print(f"[green]✓ {stage}[/] in {time.perf_counter() - start:.1f}s: {summary}")
    if ranks.is_zero():
        link_latest(run, console)


TARGET_STAGES = ("data", "distill", "log_acceptance", "export")  # the stages that load the target


def target_fingerprint(ctx: StageContext) -> str:
    from metasd_train.export.fingerprint import fingerprint

    return fingerprint(ctx.target)


def on_zero(fn):
    """fn() on rank 0 (its result there, None elsewhere); a UserError it raises is raised on every
    rank, so no rank is left waiting for a partner that has exited."""
    result, error = None, None
    if ranks.is_zero():
        try:
            result = fn()
        except UserError as e:
            error = str(e)
    error = ranks.broadcast(error)
    if error is not None:
        shared = UserError(error)
        shared.echo = ranks.is_zero()  # one line on the terminal, not one per rank
        raise shared
    return result


def link_latest(run: RunDir, console: Console | None = None) -> None:
    """<parent>/latest -> this run (replaced atomically); a file, folder or link of that name that is
    not one of ours is left alone."""
    link = run.path.parent / "latest"
    if (link.exists() or link.is_symlink()) and not is_our_link(link):
        if console is not None:
            console.print(f"[yellow]{link} is not a link of ours; left as it is (no 'latest' link made)[/]")
        return
    tmp = run.path.parent / f".latest.{os.getpid()}.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(run.path.name)
    os.replace(tmp, link)


def is_our_link(link) -> bool:
    """A symlink to a sibling run directory (or to one since deleted): what link_latest makes."""
    if not link.is_symlink() or os.sep in (name := os.readlink(link)):
        return False
    sibling = RunDir(link.parent / name)
    try:
        return not sibling.path.exists() or sibling.is_run()
    except UserError:
        return False


def check_sources(cfg: DictConfig) -> None:
    """Every model the config names resolves (local path, .gguf, packaged name, random) or one error line."""
    from metasd_train.models import resolve_source

    resolve_source(cfg.target.name)
    if cfg.target.name == "random" and cfg.target.tokenizer:
        resolve_source(cfg.target.tokenizer)
    if cfg.drafter.kind == "pretrained":
        resolve_source(cfg.drafter.path)
    for name in cfg.drafter.companions:  # a companion's model is loaded only after the generalist trained
        if (c := companion(cfg.drafter, name)).kind == "pretrained":
            resolve_source(c.path)
