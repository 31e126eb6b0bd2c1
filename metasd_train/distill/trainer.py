"""Build lightning.Trainer from `trainer.*` config and fit/validate a drafter."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from metasd_train.data.datamodule import DistillDataModule
from metasd_train.distill.module import DistillModule


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
    callbacks = []
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


def fit(module: DistillModule, dm: DistillDataModule, trainer: L.Trainer, ckpt_dir: Path) -> None:
    last = ckpt_dir / "last.ckpt"
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.exists() else None)


def validate(module: DistillModule, dm: DistillDataModule, trainer: L.Trainer) -> dict[str, dict[str, float]]:
    """{domain: {acceptance, top1, kd}} on each domain's validation split."""
    results = trainer.validate(module, datamodule=dm, verbose=False)
    merged = {k: float(v) for r in results for k, v in r.items()}
    out: dict[str, dict[str, float]] = {}
    for key, value in merged.items():
        _, metric, domain = key.split("/")
        out.setdefault(domain, {})[metric] = value
    return out
