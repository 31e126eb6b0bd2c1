"""A run directory's lock: one train.py per run folder; the lock dies with its process."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from metasd_train.errors import UserError


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class RunLock:
    """An exclusive lock on a run directory: flock on `<run>/.lock`, a file that names its holder.

    The kernel drops a flock when its process dies, so a lock left by a killed run (kill -9, a
    crash, a reboot) is taken over without asking. Where the filesystem has no flock, the file
    alone is the lock, and one naming a dead process of this host is stale and taken over.
    """

    def __init__(self, path: Path):
        self.path, self.fd = Path(path), None

    def acquire(self, what: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(self._busy(what, self.holder())) from None
        except OSError as e:  # no flock here (some network/FUSE filesystems): the holder's pid decides
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            if is_alive(holder := self.holder()):
                os.close(fd)
                raise UserError(self._busy(what, holder)) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)  # the file stays (removing it would race a waiting opener); empty = free
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def holder(self) -> dict:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    @staticmethod
    def _busy(what: str, holder: dict) -> str:
        who = (
            f"process {holder['pid']} on {holder.get('host', '?')} (since {holder.get('since', '?')})"
            if "pid" in holder
            else "another process (starting up)"
        )
        return f"{what} is in use by {who}; wait for it to finish or stop it, then run this command again"


def is_alive(holder: dict) -> bool:
    """Whether a lock holder may still run: alive on this host, or on another host (we cannot tell)."""
    if "pid" not in holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True
