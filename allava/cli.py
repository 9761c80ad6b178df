"""What every stage's command line does with bad input: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


def exit_code(run: Callable[[], object], *expected: type[BaseException]) -> int:
    """0 when ``run`` finishes; 2 with "error: <message>" on stderr when it raises one of ``expected``
    (errors about the input, whose message names the file and what was expected). Anything else is
    a bug and keeps its traceback."""
    try:
        run()
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
