"""One exit-code policy for both command-line tools.

0 success; 2 bad usage or input (`plumbing.exceptions.UsageError` and every error deriving from it:
a malformed file, an invalid setting, a missing bundle); 130 interrupted; 1 anything else. The error
is one line on stderr, `PROG: error: ...`, with the traceback only under `--debug`.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from plumbing.exceptions import UsageError

USAGE = 2
FAILURE = 1
INTERRUPTED = 130


def exit_code(exc: BaseException) -> int:
    return USAGE if isinstance(exc, UsageError) else FAILURE


def report(prog: str, exc: BaseException, debug: bool) -> int:
    """Print the one-line error (and the traceback under --debug); return the exit code."""
    if debug:
        traceback.print_exc()
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return exit_code(exc)


def run_command(prog: str, command: Callable[[], int], debug: bool) -> int:
    """`command()`'s exit code, or the policy's for what it raised."""
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        return report(prog, exc, debug)
