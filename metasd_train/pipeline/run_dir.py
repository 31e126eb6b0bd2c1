"""A run directory: resolved config, a manifest of finished stages, one folder per stage's outputs.

A stage's folder is written under a temp name and renamed when the stage finishes, so a run
killed at any point holds only whole stages; re-running the same command skips them. Only one
process works in a run directory at a time (`RunLock`), and only folders this package made are
ever opened as one: a new or empty folder, or one holding our manifest.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from metasd_train.atomic import write_json, write_text
from metasd_train.config import STAGES
from metasd_train.errors import UserError
from metasd_train.pipeline.lock import RunLock, now
from metasd_train.pipeline.settings import changed_settings

FORMAT = "metasd-train run"  # the manifest's marker: what makes a folder a run directory


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock: RunLock | None = None

    @classmethod
    def create_or_open(cls, cfg: DictConfig, root: str | Path = "runs") -> RunDir:
        """Open cfg.run_dir (or make runs/<recipe>/<timestamp>), lock it, clean stale temp files and
        record the config; one error line if the folder is not ours, is in use, or was made otherwise."""
        run = cls(cfg.run_dir) if cfg.run_dir else cls(new_run_path(Path(root) / cfg.recipe))
        run.check_usable()
        run.path.mkdir(parents=True, exist_ok=True)
        run.lock = RunLock(run.path / ".lock")
        run.lock.acquire(f"run_dir={run.path}")
        try:
            run.check_usable()  # again under the lock: another process may have made it meanwhile
            run.clean_stale()
            run.record_config(cfg)
        except BaseException:
            run.close()
            raise
        return run

    def close(self) -> None:
        """Release the lock (the kernel also releases it when the process dies)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def check_usable(self) -> None:
        """A new or empty folder, or a run directory; anything else (a file, a user's folder) is refused."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"run_dir={self.path} is a file; pass a folder (a new one, or an earlier run's)")
        if not self.path.is_dir() or self.is_run() or leftovers_only(self.path):
            return
        raise UserError(
            f"run_dir={self.path} is a folder that holds other files and no {self.manifest_path.name}: "
            "it is not a metasd-train run, and nothing in it is touched; pass a new or empty folder"
        )

    def is_run(self) -> bool:
        """Our manifest is here (or, for a run made before manifests were written at start, our config)."""
        if self.manifest_path.exists():
            self.manifest()  # a corrupt manifest is one error line
            return True
        if self.config_path.exists():
            old = self.config()
            return all(k in old for k in ("recipe", "stages", "target", "drafter"))
        return False

    # --- config.yaml ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def config(self) -> DictConfig | None:
        if not self.config_path.exists():
            return None
        try:
            cfg = OmegaConf.load(self.config_path)
        except Exception as e:  # yaml and OmegaConf errors alike
            raise UserError(
                f"{self.config_path} is corrupt ({one_line(e)}); restore it or start a new run_dir"
            ) from None
        if not isinstance(cfg, DictConfig):
            raise UserError(f"{self.config_path} is corrupt (not a mapping); restore it or start a new run_dir")
        return cfg

    def record_config(self, cfg: DictConfig) -> None:
        """Write cfg as config.yaml, after refusing changes to settings that finished stages were built with."""
        old = self.config()
        if old is not None:
            done = [s for s in STAGES if self.is_done(s)]
            changes = changed_settings(old, cfg, done)
            if changes:
                raise UserError(self._changes_message(changes))
        if not self.manifest_path.exists():
            write_json(self.manifest_path, {"format": FORMAT, "created": now(), "stages": {}})
        write_text(self.config_path, OmegaConf.to_yaml(cfg))

    def _changes_message(self, changes: list[tuple[str, object, object, str]]) -> str:
        key, old, new, stage = changes[0]
        more = f" (also changed: {', '.join(c[0] for c in changes[1:])})" if len(changes) > 1 else ""
        return (
            f"run_dir={self.path} was made with {key}={old!r}, not {new!r}{more}; its finished '{stage}' stage "
            f"was built with it: resume with the run's own settings (see {self.config_path.name}), delete "
            f"{stage}/ and the stage folders after it to rebuild them, or start a new run_dir"
        )

    # --- manifest.json ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"format": FORMAT, "stages": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{self.manifest_path} is corrupt ({one_line(e)}); {CORRUPT_FIX}") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("stages"), dict):
            raise UserError(f"{self.manifest_path} is corrupt (no 'stages' mapping); {CORRUPT_FIX}")
        return manifest

    def stage_dir(self, stage: str) -> Path:
        return self.path / stage

    def is_done(self, stage: str) -> bool:
        """Finished, with every output file still there at the size it was written with."""
        entry = self.manifest()["stages"].get(stage)
        if not entry:
            return False
        outputs = entry.get("outputs") or {}
        if isinstance(outputs, list):  # manifests written before sizes were recorded
            return all((self.path / o).exists() for o in outputs)
        return all(size_of(self.path / o) == size for o, size in outputs.items())

    def mark_done(self, stage: str, seconds: float, summary: dict | None = None) -> None:
        manifest = self.manifest()
        files = sorted(p for p in self.stage_dir(stage).rglob("*") if p.is_file())
        manifest["stages"][stage] = {
            "outputs": {str(p.relative_to(self.path)): p.stat().st_size for p in files},
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

    def check_target(self, fingerprint: str, name: str) -> None:
        """Record the target's fingerprint, or refuse a target whose weights differ from the one the
        finished stages were built with (same name, other seed, config or files)."""
        manifest = self.manifest()
        old = manifest.get("target_fingerprint")
        if old and old != fingerprint and any(self.is_done(s) for s in STAGES):
            raise UserError(
                f"run_dir={self.path} was built with a target of fingerprint {old}, but target.name={name} now "
                f"loads one of fingerprint {fingerprint} (other weights under the same name); start a new run_dir"
            )
        if old != fingerprint:
            manifest["target_fingerprint"] = fingerprint
            write_json(self.manifest_path, manifest)

    def clean_stale(self) -> list[Path]:
        """Remove temp files and folders (`.*.tmp`) a killed process left: beside the stage folders, the
        data shards and the checkpoints. Only under the lock, so no live writer owns them."""
        places = [self.path, self.path / ".data.partial", *sorted((self.path / ".checkpoints").glob("*"))]
        removed = []
        for place in places:
            for p in sorted(place.glob(".*.tmp")) if place.is_dir() else []:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
        return removed


CORRUPT_FIX = "restore it, or delete it to redo every stage, or start a new run_dir"


def leftovers_only(path: Path) -> bool:
    """Nothing in the folder but what a killed start of ours could leave (our lock, temp names)."""
    return all(p.name == ".lock" or (p.name.startswith(".") and p.name.endswith(".tmp")) for p in path.iterdir())


def new_run_path(parent: Path) -> Path:
    """parent/<timestamp>, with a suffix when two runs start within the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = parent / stamp, 1
    while path.exists():
        path, n = parent / f"{stamp}-{n}", n + 1
    return path


def size_of(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
