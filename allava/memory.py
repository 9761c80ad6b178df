"""Peak memory of this process, as every stage reports it (runtimes, quantizers, benchmark scripts)."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB, from /proc (VmHWM) where there is one.

    Not ru_maxrss first: Linux carries ru_maxrss over fork and execve, so a process started by a
    parent that had imported torch would report the parent's peak. VmHWM belongs to this address
    space. Elsewhere ru_maxrss is all there is (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0
