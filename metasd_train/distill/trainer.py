"""Build lightning.Trainer from `trainer.*` config and fit/validate a drafter."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn

from metasd_train.atomic import write_json
from metasd_train.config import DistillConfig
from metasd_train.data.datamodule import DistillDataModule
from metasd_train.distill.module import DistillModule
from metasd_train.errors import UserError


class TokenThroughput(L.Callback):
    """Training tokens (non-pad, all ranks) per second of fit, from the first batch to the last."""

    def __init__(self):
        self.tokens, self.start, self.result = 0, None, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.tokens = self.tokens + batch["attention_mask"].sum()  # stays on the device: no sync per step

    def on_train_end(self, trainer, module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - (self.start or time.perf_counter())
        total = trainer.strategy.reduce(torch.as_tensor(self.tokens, device=module.device).float(), reduce_op="sum")
        self.result = {
            "tokens": int(total),
            "seconds": round(seconds, 2),
            "tokens_per_s": float(total) / max(seconds, 1e-9),
            "world_size": trainer.world_size,
        }


class StepCheckpoint(ModelCheckpoint):
    """`last.ckpt` every `every` optimizer steps and when training ends, each written whole: a kill
    mid-model resumes from the last such step."""

    def __init__(self, dirpath: Path, every: int):
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every)

    def on_train_end(self, trainer, module) -> None:
        if self._last_global_step_saved != trainer.global_step:  # the final steps after the last boundary
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, module) -> None:
        """A step's checkpoint is written in on_train_batch_end, before that step's validation (val_every a
        multiple of checkpoint_every, the last step, a max_time stop), and Lightning's resume skips a
        validation its checkpoint came before: written again, so that what BestWeights took from this
        validation rides in it (checkpoint callbacks run last: BestWeights has seen it)."""
        super().on_validation_end(trainer, module)
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting and self._last_global_step_saved == trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        part = Path(filepath).with_name(f".{Path(filepath).name}.partial.tmp")  # cleaned on start if left
        trainer.save_checkpoint(part, self.save_weights_only)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(part, filepath)
        trainer.strategy.barrier()
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath


class BestWeights(L.Callback):
    """Keeps the module's weights from the validation with the highest `monitor` and puts them back
    when fitting ends; its state rides in the checkpoint, so a resumed fit still knows its best."""

    def __init__(self, monitor: str):
        self.monitor, self.best, self.weights = monitor, None, None

    def on_validation_end(self, trainer, module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        if self.best is None or float(value) > self.best:
            self.best = float(value)
            self.weights = {k: t.detach().to("cpu", copy=True) for k, t in module.state_dict().items()}

    def on_fit_end(self, trainer, module) -> None:
        if self.weights is not None:
            module.load_state_dict(self.weights)

    def state_dict(self) -> dict:
        return {"best": self.best, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.weights = state["best"], state["weights"]


class Interrupted(L.Callback):
    """Remembers a Ctrl-C, which Lightning turns into `sys.exit(1)` (see `_call`)."""

    def __init__(self):
        self.seen = False

    def on_exception(self, trainer, module, exception) -> None:
        self.seen = self.seen or isinstance(exception, KeyboardInterrupt)


def trainer_kwargs(trainer_cfg: dict) -> dict:
    """`trainer.*` as lightning.Trainer keyword arguments, with our precision default."""
    kw = dict(trainer_cfg)
    if kw.get("precision") is None:
        gpu = torch.cuda.is_available() and kw.get("accelerator", "auto") in ("auto", "gpu", "cuda")
        kw["precision"] = "bf16-mixed" if gpu else "32-true"
    return kw


SET_BY_US = ("max_steps", "val_check_interval", "check_val_every_n_epoch", "accumulate_grad_batches", "callbacks",
             "logger", "num_sanity_val_steps", "enable_model_summary")  # fmt: skip


def build_trainer(**kw) -> L.Trainer:
    """lightning.Trainer(**kw); a configuration Lightning rejects is one error line naming trainer.*."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kw)
    except TypeError as e:
        raise UserError(f"trainer: {first_line(e)} (trainer.* keys are lightning.Trainer arguments)") from None
    except (MisconfigurationException, ValueError, RuntimeError) as e:
        raise UserError(f"trainer: {first_line(e)}") from None


def check_trainer(trainer_cfg: dict) -> None:
    """Build (and drop) a Trainer from `trainer.*`, so Lightning's config errors come before any stage."""
    clash = sorted(set(trainer_cfg) & set(SET_BY_US))
    if clash:
        raise UserError(f"trainer.{clash[0]} is set by the recipe's distill.* keys; remove it from trainer")
    kw = {**trainer_kwargs(trainer_cfg), "logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    build_trainer(**kw)


def make_trainer(
    trainer_cfg: dict,
    log_dir: Path,
    name: str,
    max_steps: int = 1,
    val_every: int | None = None,
    ckpt_dir: Path | None = None,
    accumulate: int = 1,
    checkpoint_every: int | None = None,
    monitor: str | None = None,
) -> L.Trainer:
    """`trainer_cfg` passes through to lightning.Trainer (devices, strategy, precision, ...).

    checkpoint_every: optimizer steps between checkpoints in `ckpt_dir` (0: only when training ends;
    None: distill.checkpoint_every's default). monitor: a validation metric (higher is better); the
    fit ends on the weights of its best validation (BestWeights) instead of the last step's.
    """
    if checkpoint_every is None:
        checkpoint_every = DistillConfig.checkpoint_every
    kw = trainer_kwargs(trainer_cfg)
    callbacks = [TokenThroughput(), Interrupted(), *([BestWeights(monitor)] if monitor else [])]
    if ckpt_dir is not None and kw.get("enable_checkpointing", True):
        callbacks.append(StepCheckpoint(ckpt_dir, checkpoint_every))
    else:
        kw["enable_checkpointing"] = False
    loggers = [CSVLogger(log_dir, name=name, version=""), TensorBoardLogger(log_dir, name=name, version="")]
    return build_trainer(
        max_steps=max_steps,
        val_check_interval=val_every or None,
        check_val_every_n_epoch=None,
        accumulate_grad_batches=accumulate,
        callbacks=callbacks,
        logger=loggers,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        **kw,
    )


def fit(module: DistillModule, dm: DistillDataModule, trainer: L.Trainer, ckpt_dir: Path) -> dict:
    """Fit (resuming from the last checkpoint if there is one); returns the training throughput.

    The throughput is kept beside the checkpoint: a fit with nothing left to do (its checkpoint
    already at max_steps, or max_steps=0) returns the one measured when it ran.
    """
    last, saved = ckpt_dir / "last.ckpt", ckpt_dir / "throughput.json"
    _call(trainer, trainer.fit, module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
    result = next(c.result for c in trainer.callbacks if isinstance(c, TokenThroughput))
    if result:
        if trainer.is_global_zero:
            write_json(saved, result)
        return result
    if saved.exists():
        return {**json.loads(saved.read_text()), "world_size": trainer.world_size}
    return {"tokens": 0, "seconds": 0.0, "tokens_per_s": 0.0, "world_size": trainer.world_size}


def _call(trainer: L.Trainer, method, *args, **kwargs):
    """trainer.fit / trainer.validate; a Ctrl-C inside comes back out as KeyboardInterrupt (Lightning
    catches it, shuts down and calls sys.exit(1)), so the entry script prints one line and exits 130."""
    try:
        return method(*args, **kwargs)
    except SystemExit:
        if any(isinstance(c, Interrupted) and c.seen for c in trainer.callbacks):
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores SIGINT from then on
            raise KeyboardInterrupt from None
        raise


def first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def validate(module: DistillModule, dm: DistillDataModule, trainer: L.Trainer) -> dict[str, dict[str, float]]:
    """{domain: {acceptance, top1, kd}} on each domain's validation split."""
    results = _call(trainer, trainer.validate, module, datamodule=dm, verbose=False)
    merged = {k: float(v) for r in results for k, v in r.items()}
    out: dict[str, dict[str, float]] = {}
    for key, value in merged.items():
        _, metric, domain = key.split("/")
        out.setdefault(domain, {})[metric] = value
    return out
