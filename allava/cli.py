"""What every stage's command line does with bad input or a full disk: one line on stderr, no traceback.

Exit codes shared by every command:
  2  bad input: a file the command reads (checkpoint, manifest, profile, config) is missing, cut short or
     wrong; the line names the file and what was expected.
  4  no space left on device (or quota exceeded) while writing: the line names the output, the space it
     needed and what is free; the partial output was removed (a resumable stage keeps its journal
     consistent), so the same command can simply be run again once there is room.
A distinct code for a full disk because it is not the input's fault: a script (make main, the bench's
build step) can tell "free some space and rerun" from "fix the input".
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from allava.fileio import DiskFullError, is_disk_full

EXIT_BAD_INPUT = 2
EXIT_DISK_FULL = 4


def one_line(message: str) -> str:
    """A message on one line: parsers (YAML's, with its caret diagram) explain across several, and a
    command's error is one line a script can grep or show."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def disk_full_line(exc: BaseException) -> str:
    """The one line for a full disk. A raw ENOSPC that no writer wrapped still names its file when the
    OS told us one."""
    err = exc if isinstance(exc, DiskFullError) else None
    if err is None:
        filename = getattr(exc, "filename", None)
        err = DiskFullError(filename) if filename else None
    return f"error: {err}" if err is not None else f"error: no space left on device ({exc})"


def exit_code(run: Callable[[], object], *expected: type[BaseException]) -> int:
    """0 when ``run`` finishes; 2 with "error: <message>" on stderr when it raises one of ``expected``
    (errors about the input, whose message names the file and what was expected); 4 with one line when
    the disk fills (see the module docstring). Anything else is a bug and keeps its traceback."""
    return guard(lambda: _expected(run, expected))


def _expected(run: Callable[[], object], expected: tuple[type[BaseException], ...]) -> int:
    try:
        run()
    except expected as exc:
        if is_disk_full(exc):
            raise
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def guard(main: Callable[[], int | None]) -> int:
    """Run a command's ``main`` and return its exit code, turning a full disk into one line and exit 4.

    For the commands whose ``main`` returns its own exit code (bench, check, synth): their
    ``__main__`` block calls ``sys.exit(guard(main))``."""
    try:
        return int(main() or 0)
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        print(disk_full_line(exc), file=sys.stderr)
        return EXIT_DISK_FULL
