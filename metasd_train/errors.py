"""One exception type for every mistake a user can fix; entry scripts print it as one line."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class UserError(Exception):
    """Bad input: the message names the problem and the fix, on one line."""


@contextmanager
def one_line_errors():
    """Turn a UserError (or a Ctrl-C) into one line on stderr and exit code 2, never a traceback."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None


def require(cond: bool, message: str) -> None:
    if not cond:
        raise UserError(message)
