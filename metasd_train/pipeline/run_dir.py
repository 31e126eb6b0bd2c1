"""A run directory: resolved config, a manifest of finished stages, one folder per stage's outputs.

A stage's folder is written under a temp name and renamed when the stage finishes, so a run
killed at any point holds only whole stages; re-running the same command skips them.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from metasd_train.atomic import write_json, write_text
from metasd_train.errors import UserError


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create_or_open(cls, cfg: DictConfig, root: str | Path = "runs") -> RunDir:
        if cfg.run_dir:
            run = cls(cfg.run_dir)
            if run.path.exists() and (run.path / "config.yaml").exists():
                run.check_same_recipe(cfg)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            run = cls(Path(root) / cfg.recipe / stamp)
        run.path.mkdir(parents=True, exist_ok=True)
        write_text(run.path / "config.yaml", OmegaConf.to_yaml(cfg))
        return run

    def check_same_recipe(self, cfg: DictConfig) -> None:
        old = OmegaConf.load(self.path / "config.yaml")
        for key in ("target.name", "drafter.kind", "drafter.layers"):
            if OmegaConf.select(old, key) != OmegaConf.select(cfg, key):
                raise UserError(
                    f"run_dir={self.path} was made with {key}={OmegaConf.select(old, key)}, not "
                    f"{OmegaConf.select(cfg, key)}; resume it with its own settings or start a new run"
                )

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict:
        if self.manifest_path.exists():
            return json.loads(self.manifest_path.read_text())
        return {"stages": {}}

    def stage_dir(self, stage: str) -> Path:
        return self.path / stage

    def is_done(self, stage: str) -> bool:
        entry = self.manifest()["stages"].get(stage)
        return bool(entry) and all((self.path / o).exists() for o in entry["outputs"])

    def mark_done(self, stage: str, seconds: float, summary: dict | None = None) -> None:
        manifest = self.manifest()
        outputs = sorted(str(p.relative_to(self.path)) for p in self.stage_dir(stage).rglob("*") if p.is_file())
        manifest["stages"][stage] = {
            "outputs": outputs,
            "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "summary": summary or {},
        }
        write_json(self.manifest_path, manifest)

    def require(self, stage: str) -> Path:
        """The output folder of an earlier stage, or one clear error saying how to make it."""
        if not self.is_done(stage):
            raise UserError(f"{self.path} has no finished '{stage}' stage; run it first (stages=[{stage},...])")
        return self.stage_dir(stage)
