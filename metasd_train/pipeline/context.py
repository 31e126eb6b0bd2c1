"""What every stage shares: config, run directory, device, and the target loaded once."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from omegaconf import DictConfig, OmegaConf

from metasd_train.models import load_model, pick_device
from metasd_train.pipeline.run_dir import RunDir


@dataclass
class StageContext:
    cfg: DictConfig
    run: RunDir
    console: object = None
    extras: dict = field(default_factory=dict)

    @cached_property
    def device(self) -> torch.device:
        return pick_device(self.cfg.device)

    @cached_property
    def _target(self):
        t = self.cfg.target  # the user's own config: the one place a loader flag may come from
        return load_model(OmegaConf.to_container(t), self.device, trust_remote_code=bool(t.trust_remote_code))

    @property
    def target(self):
        return self._target.model

    @property
    def tokenizer(self):
        tok = self._target.tokenizer
        if tok is not None and tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok

    def log(self, *args) -> None:
        if self.console is not None:
            self.console.print(*args)
