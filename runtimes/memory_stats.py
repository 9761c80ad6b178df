"""Where this process's resident memory sits right now, from the kernel's own accounting (/proc).

Why /proc and not a tracker of our own allocations: llama.cpp, libmtmd and ONNX Runtime allocate in
C++ (malloc, mmap, their own arenas), so only the kernel sees all of it. Three sources, each cheap:

* ``/proc/self/status``: VmRSS (resident now), VmHWM (peak so far), RssAnon (heap, arenas, copies
  of weights), RssFile (pages of mapped files: memory-mapped weights, shared libraries).
* ``/proc/self/smaps``: per mapping Rss, so a file-backed mapping of a model file can be told from
  the libraries' pages (``file_rss_mib``). Reading it walks every mapping (a few ms).

On hosts without /proc (macOS) every reader returns an empty result rather than failing: memory
figures are a report, never a reason to stop a run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def status_mib() -> dict[str, float]:
    """The STATUS_FIELDS of /proc/self/status in MiB ({} where there is no /proc)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in STATUS_FIELDS:
                    out[key] = int(rest.split()[0]) / 1024.0
    except OSError:
        return {}
    return out


def file_rss_mib(paths: Iterable[str | Path]) -> dict[str, float]:
    """Resident MiB of this process's mappings of each file in ``paths`` (0.0 for one not mapped).

    A file opened with mmap (llama.cpp's default for GGUF weights, ONNX Runtime's external data)
    shows here; a file read into a heap buffer does not (its bytes are in RssAnon)."""
    wanted = {str(Path(p).resolve()): str(p) for p in paths}
    out = dict.fromkeys(wanted.values(), 0.0)
    current: str | None = None
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                first = line.split(None, 1)[0] if line.strip() else ""
                if "-" in first and not first.endswith(":"):  # a mapping header: addr perms offset dev inode [path]
                    parts = line.split(None, 5)
                    current = wanted.get(parts[5].strip()) if len(parts) == 6 else None
                elif current is not None and first == "Rss:":
                    out[current] += int(line.split()[1]) / 1024.0
    except OSError:
        return {}
    return out


def snapshot(stage: str, files: Iterable[str | Path] = ()) -> dict[str, object]:
    """One stage's figures: the status fields, plus the resident MiB of ``files`` mapped."""
    snap: dict[str, object] = {"stage": stage, "t": time.time(), **status_mib()}
    files = list(files)
    if files:
        snap["files_mapped"] = file_rss_mib(files)
    return snap


def return_freed_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim(0)``); False where there is no glibc.

    Why: freeing an ONNX Runtime session (the vision encoder after its image, runtimes/onnx_runtime.py
    release_vision) returns its weights and buffers to malloc, which keeps most of them mapped: at
    ALLaVA-3B size ~230 MiB stay resident and the decoder's prefill is then allocated on top of them
    (docs/memory.md). One call per image; not per token (each call makes the next allocation fault
    its pages in again)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
