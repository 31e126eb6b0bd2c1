"""Files that installed packages ship (model weights, data sets), found without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from metasd_train.errors import UserError


def package_file(package: str, relative: str, install: str, needed_for: str = "this") -> Path:
    """`relative` inside installed `package`; one clear line naming `install` when it is missing."""
    spec = importlib.util.find_spec(package)  # locates the folder; the package's code never runs
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{needed_for} needs the {package} package: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall with: {install} --force-reinstall")
    return path
