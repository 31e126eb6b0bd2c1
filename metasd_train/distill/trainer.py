"""Build lightning.Trainer from `trainer.*` config and fit/validate a drafter."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from metasd_train.data.datamodule import DistillDataModule
from metasd_train.distill.module import DistillModule


class TokenThroughput(L.Callback):
    """Training tokens (non-pad, all ranks) per second of fit, from the first batch to the last."""

    def __init__(self):
        self.tokens, self.start, self.result = 0, None, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.tokens += int(batch["attention_mask"].sum())

    def on_train_end(self, trainer, module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - (self.start or time.perf_counter())
        total = trainer.strategy.reduce(torch.tensor(float(self.tokens), device=module.device), reduce_op="sum")
        self.result = {
            "tokens": int(total),
            "seconds": round(seconds, 2),
            "tokens_per_s": float(total) / max(seconds, 1e-9),
            "world_size": trainer.world_size,
        }


def make_trainer(
    trainer_cfg: dict,
    log_dir: Path,
    name: str,
    max_steps: int = 1,
    val_every: int | None = None,
    ckpt_dir: Path | None = None,
    accumulate: int = 1,
) -> L.Trainer:
    """`trainer_cfg` passes through to lightning.Trainer (devices, strategy, precision, ...)."""
    kw = dict(trainer_cfg)
    if kw.get("precision") is None:
        gpu = torch.cuda.is_available() and kw.get("accelerator", "auto") in ("auto", "gpu", "cuda")
        kw["precision"] = "bf16-mixed" if gpu else "32-true"
    callbacks = [TokenThroughput()]
    if ckpt_dir is not None and kw.get("enable_checkpointing", True):
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0))
    else:
        kw["enable_checkpointing"] = False
    loggers = [CSVLogger(log_dir, name=name, version=""), TensorBoardLogger(log_dir, name=name, version="")]
    return L.Trainer(
        max_steps=max_steps,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        accumulate_grad_batches=accumulate,
        callbacks=callbacks,
        logger=loggers,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        **kw,
    )


def fit(module: DistillModule, dm: DistillDataModule, trainer: L.Trainer, ckpt_dir: Path) -> dict:
    """Fit (resuming from the last checkpoint if there is one); returns the training throughput."""
    last = ckpt_dir / "last.ckpt"
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
    return next(c.result for c in trainer.callbacks if isinstance(c, TokenThroughput))


def validate(module: DistillModule, dm: DistillDataModule, trainer: L.Trainer) -> dict[str, dict[str, float]]:
    """{domain: {acceptance, top1, kd}} on each domain's validation split."""
    results = trainer.validate(module, datamodule=dm, verbose=False)
    merged = {k: float(v) for r in results for k, v in r.items()}
    out: dict[str, dict[str, float]] = {}
    for key, value in merged.items():
        _, metric, domain = key.split("/")
        out.setdefault(domain, {})[metric] = value
    return out
