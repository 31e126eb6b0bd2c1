"""The ensemble manifest (`ensemble.json`, format metasd-ensemble/1): written, read, validated and
loaded here and nowhere else.

    {"format", "target": {"name", "fingerprint", [random: "config", "seed", "tokenizer"]},
     "drafters": [{"name", "arm", "kind", "path", "gamma", ["adapter"]}], "ngram": {"gamma", "length"} | null,
     "bandit": "bandit", "decode": {...}, "dtype"}

Paths are relative to the export folder and must stay inside it. Nothing in the manifest can set a
loader flag: a handed-over export never decides how code is trusted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from metasd_train.atomic import write_json
from metasd_train.errors import UserError

FORMAT = "metasd-ensemble/1"
NAME = "ensemble.json"


def write_ensemble(folder: Path, target: dict, drafters: list[dict], ngram, decode: dict, dtype: str) -> None:
    """Write the manifest into an export folder whose drafters and bandit/ are already in place."""
    manifest = {
        "format": FORMAT,
        "target": target,
        "drafters": drafters,
        "ngram": ngram,  # {"gamma", "length"} or None
        "bandit": "bandit",
        "decode": decode,
        "dtype": dtype,
    }
    validate(manifest, Path(folder) / NAME)
    write_json(Path(folder) / NAME, manifest)


def find_export(run: str | Path) -> Path:
    """The export folder of a run directory (its export/) or an export folder itself."""
    path = Path(run)
    for cand in (path / "export", path):
        if (cand / NAME).is_file():
            return cand
    raise UserError(
        f"{run} holds no exported ensemble (export/{NAME}); finish the run: python train.py run_dir={run} ..."
    )


def read_ensemble(folder: str | Path) -> dict:
    """The validated manifest of an export folder; one clear error naming the file when it is off."""
    path = Path(folder) / NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}); re-run the export stage") from None
    validate(manifest, path)
    return manifest


def validate(manifest, path: Path) -> None:
    def bad(what: str):
        raise UserError(f"{path}: {what}; re-run the export stage (python train.py run_dir=... stages=[export])")

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        bad(f"not a {FORMAT} manifest")
    for key, kind in (("target", dict), ("drafters", list), ("decode", dict), ("bandit", str)):
        if not isinstance(manifest.get(key), kind):
            bad(f"'{key}' is missing or not a {kind.__name__}")
    if not isinstance(manifest["target"].get("name"), str) or not manifest["target"].get("fingerprint"):
        bad("the target entry needs a name and a fingerprint")
    for d in manifest["drafters"]:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("gamma"), int):
            bad(f"drafter entry {d!r} needs a name and an integer gamma")
        for key in ("path", "adapter"):
            if key in d:
                inside(path.parent, d[key], bad)
    inside(path.parent, manifest["bandit"], bad)


def inside(folder: Path, relative, bad) -> Path:
    """`folder / relative`, refusing absolute paths and anything that resolves outside `folder`."""
    if not isinstance(relative, str) or Path(relative).is_absolute():
        bad(f"path {relative!r} must be relative to the export folder")
    full = (folder / relative).resolve()
    if not full.is_relative_to(folder.resolve()):
        bad(f"path {relative!r} points outside the export folder")
    return full


@dataclass
class Ensemble:
    manifest: dict
    folder: Path
    target: object  # models.LoadedModel
    arms: list
    load_seconds: dict = field(default_factory=dict)  # "target" and each drafter by name

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]


def load_ensemble(folder: str | Path, device="auto", dtype: str | None = None, arm: str | None = None) -> Ensemble:
    """Target + arms of an export folder (or run directory); `arm` keeps that one drafter only.
    `dtype` None is the export's decode.dtype; "auto" is `decode_dtype`'s choice for the device."""
    from metasd_train.decoding.assemble import build_arms
    from metasd_train.export.fingerprint import fingerprint
    from metasd_train.models import decode_dtype, load_model, pick_device

    folder = find_export(folder)
    manifest = read_ensemble(folder)
    t = manifest["target"]
    spec = {k: t[k] for k in ("name", "config", "seed", "tokenizer") if k in t}
    start = time.perf_counter()
    device = pick_device(str(device))
    dtype = decode_dtype(dtype or manifest.get("decode", {}).get("dtype", "auto"), device)
    target = load_model({**spec, "dtype": dtype}, device)
    seconds = {"target": round(time.perf_counter() - start, 2)}
    if fingerprint(target.model) != t["fingerprint"]:
        raise UserError(
            f"the target {t['name']!r} found here is not the one {folder} was trained for "
            "(fingerprint mismatch); install the same target or retrain"
        )
    specs = [{**d, **{k: str(folder / d[k]) for k in ("path", "adapter") if k in d}} for d in manifest["drafters"]]
    ngram = manifest.get("ngram") or None  # {"gamma", "length"?}: manifests before "length" are "fixed"
    if arm is not None:
        names = [d["name"] for d in specs] + (["ngram"] if ngram else [])
        if arm not in names:
            raise UserError(f"arm={arm!r} is not in this ensemble; choose one of: {', '.join(names)}")
        specs, ngram = [s for s in specs if s["name"] == arm], ngram if arm == "ngram" else None
    arms = build_arms(specs, target.model, target.tokenizer, ngram, seconds)
    return Ensemble(manifest, folder, target, arms, seconds)
