"""Atomic writes: every file lands whole or not at all (temp file in the same folder + rename).

Temp names start with `.` and end in `.tmp`, so a kill -9 leaves only such names behind; a run
directory removes them when it is next opened (`RunDir.clean_stale`). What lands gets the
permissions a plain `open()`/`mkdir` would give under the process umask (mkstemp/mkdtemp make
them private), so a serving account can read exports.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only at publish time)
    os.umask(old)
    return old


def temp_name(path: Path) -> str:
    """The prefix of temp files and folders beside `path` (and the pattern stale-cleaning matches)."""
    return f".{path.name}."


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_name(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside `path`; it lands on `path` only if the block succeeds.

    replace=False is for caches keyed by their content: the first writer wins, and a folder that
    another process published meanwhile is never removed under its readers (ours is discarded).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_name(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())
        if not replace:
            try:
                os.rename(tmp, path)  # fails if another writer's non-empty folder is there
            except OSError:
                if not path.is_dir():
                    raise
            return
        _replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _replace_dir(new: Path, path: Path) -> None:
    """Put folder `new` at `path`; an old folder there is first renamed to a temp name, then removed."""
    if path.is_dir() and not path.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=temp_name(path), suffix=".tmp", dir=path.parent))
        os.replace(path, old)  # onto the empty temp folder: a kill from here on leaves only temp names
        os.replace(new, path)
        shutil.rmtree(old)
        return
    os.replace(new, path)  # nothing there (a file or link in the way makes this fail loudly)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Atomic write through any writer that takes a path (savefig, save_file, ...)."""
    with atomic_path(path) as tmp:
        writer(tmp)
