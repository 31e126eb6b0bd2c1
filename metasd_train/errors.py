"""One exception type for every mistake a user can fix; entry scripts print it as one line."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class UserError(Exception):
    """Bad input: the message names the problem and the fix, on one line."""


@contextmanager
def one_line_errors():
    """Turn a UserError into one line on stderr and exit code 2 (a Ctrl-C: one line and 130), never a traceback."""
    try:
        yield
    except UserError as e:
        if getattr(e, "echo", True):  # False on ranks > 0 for an error rank 0 prints (pipeline/runner.on_zero)
            print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None
