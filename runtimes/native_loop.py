"""The llama.cpp runtime's greedy decode loop in C (``runtimes/csrc/greedy_loop.c``), built on demand.

Why: per generated token the Python loop costs 20-35 us on top of llama.cpp's own decode time
(a decode evicts the interpreter from the CPU caches), which on the tiny default model is 7-10% of
a step. The C loop makes the same llama.cpp calls, through pointers taken from the libllama Python
already loaded, so it needs no headers and links against nothing.

The shared object is compiled once per source version with the system C compiler into the user
cache (``$ALLAVA_CACHE_DIR`` or ``~/.cache/allava-edge``), written to a temporary name and renamed.
Without a compiler the runtime keeps the Python loop and says so (``decode_loop`` in its timings).

  python -m runtimes.native_loop      # build now (scripts/install.sh does), print the path
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from allava.fileio import cache_dir

SOURCE = Path(__file__).parent / "csrc" / "greedy_loop.c"


def library_path() -> Path:
    """Where the build for the current source lives (the file name carries the source hash)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    return cache_dir() / f"greedy_loop-{digest}.so"


def build(force: bool = False) -> Path:
    """Compile the loop if this source version has no build yet; returns the shared object's path.

    Raises RuntimeError (with the compiler's message) when no C compiler is found or it fails."""
    out = library_path()
    if out.is_file() and not force:
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler found (set CC or install cc/gcc/clang)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SOURCE)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed on {SOURCE}: {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@lru_cache(maxsize=1)
def load() -> ctypes._CFuncPtr | None:
    """The C entry point ``allava_greedy_loop`` with its signature, or None when it cannot be built."""
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as exc:
        print(f"[runtimes] native decode loop unavailable, using the Python loop: {exc}", file=sys.stderr)
        return None
    fn = lib.allava_greedy_loop
    p = ctypes.c_void_p
    fn.argtypes = [p, p, p, p, p, p, p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                   ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32)]
    fn.restype = ctypes.c_int32
    fn.never_eog = function_address(lib.allava_never_eog)  # is_eog for fixed-length (ignore_eos) runs
    return fn


def function_address(fn: object) -> int:
    """Address of a ctypes foreign function (for handing libllama's own entry points to C)."""
    return ctypes.cast(fn, ctypes.c_void_p).value


if __name__ == "__main__":
    print(build(force="--force" in sys.argv))
