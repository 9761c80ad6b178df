"""Atomic file writes: a reader never sees a half-written output, even after a crash or a full disk.

Also the one place that recognises a full disk. Every stage writes through ``atomic_path`` (or wraps
what a library writes in ``disk_full_as``), so "no space left on device" becomes one DiskFullError
naming the output, the space it needed and what is free, whichever library hit it and however that
library words it (numpy's short write, torch's "file write failed", safetensors' "os error 28",
SQLite's "disk is full"); the command lines (allava/cli.py) print it as one line and exit 4.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How libraries that lose errno word a full disk: the words themselves (safetensors' Rust io::Error,
# SQLite, C++ messages) ...
_DISK_FULL_WORDS = re.compile(r"no space left on device|disk quota exceeded|os error (28|122)\b|"
                              r"database or disk is full|storagefull", re.IGNORECASE)
# ... or only a short write (numpy's tofile, torch.save's PytorchStreamWriter), which counts as a full
# disk when the target's filesystem has (almost) nothing left.
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written|file write failed|unexpected pos", re.IGNORECASE)
_ALMOST_NOTHING = 1 << 20
MiB = 1 << 20


class DiskFullError(OSError):
    """The filesystem holding ``path`` ran out of space (or quota) while a stage wrote it.

    A subclass of OSError with errno ENOSPC, so code that handles OSError still does. ``needed`` is the
    stage's estimate of the bytes it needed (``at_least`` when only a lower bound is known: what it had
    written when the disk filled); the free space is measured when the message is made, i.e. after the
    partial output was removed, so it says what the user has to work with."""

    def __init__(self, path: str | os.PathLike[str], needed: int | None = None, at_least: bool = False,
                 message: str | None = None) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.path = Path(path)
        self.needed = needed
        self.at_least = at_least
        self.message = message  # the line a child process (a stage run as a subprocess) already printed

    def __reduce__(self) -> tuple[Any, ...]:  # OSError pickles its errno args; a worker process re-raises ours
        return (DiskFullError, (str(self.path), self.needed, self.at_least, self.message))

    def __str__(self) -> str:
        if self.message:
            return self.message
        free = free_bytes(self.path)
        need = ("needed an unknown amount" if self.needed is None
                else f"needed {'>' if self.at_least else '~'}{_mib(self.needed)} MiB")
        return f"{self.path}: no space left on device ({need}, {_mib(free) if free is not None else '?'} MiB free)"


def _mib(n: int) -> str:
    return f"{n / MiB:.1f}"


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes available to this user on the filesystem of ``path`` (its nearest existing folder)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def disk_nearly_full(path: str | os.PathLike[str]) -> bool:
    """Whether the filesystem of ``path`` has (almost) nothing left: how a failure that a library
    reports only as a status code (llama.cpp's quantizer returns 1) is told to be a full disk."""
    free = free_bytes(path)
    return free is not None and free < _ALMOST_NOTHING


def is_disk_full(exc: BaseException, target: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk. A bare short write counts only when the
    filesystem of ``target`` has almost nothing left, so a short write for another reason keeps its
    own traceback."""
    for e in _chain(exc):
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS):
            return True
        msg = str(e)
        if _DISK_FULL_WORDS.search(msg):
            return True
        if target is not None and _SHORT_WRITE.search(msg) and disk_nearly_full(target):
            return True
    return False


def _shortfall(exc: BaseException) -> int:
    """Bytes a short write could not place ("786432 requested and 504384 written" -> 282048)."""
    for e in _chain(exc):
        m = _SHORT_WRITE.search(str(e))
        if m and m.group(1):
            return max(0, int(m.group(1)) - int(m.group(2)))
    return 0


def _bytes_below(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size if path.exists() else 0
    except OSError:
        return 0


@contextmanager
def disk_full_as(path: str | os.PathLike[str], needed: int | None = None,
                 partial: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Turn a full disk inside the block into DiskFullError(path, needed).

    ``path`` is the output the user asked for (a file, a variant folder, an export folder): the message
    names it. ``needed`` is the stage's estimate of the bytes it writes; without one, an inner
    DiskFullError's figure is kept, else what ``partial`` (the temporary file or folder being written)
    held when the disk filled becomes the lower bound. Nothing is cleaned here: the writer's own
    cleanup (atomic_path, writing_variant, a staging folder) runs as the error passes through it."""
    try:
        yield
    except BaseException as exc:
        if not is_disk_full(exc, partial if partial is not None else path):
            raise
        inner = next((e for e in _chain(exc) if isinstance(e, DiskFullError)), None)
        if inner is not None and inner.message:  # a child process's own line: pass it on as it is
            raise
        if needed is not None:
            err = DiskFullError(path, needed)
        elif inner is not None:  # the writer nearer the disk named its output and size: keep them
            raise
        else:
            written = _bytes_below(Path(partial)) if partial is not None else 0
            err = DiskFullError(path, written + _shortfall(exc) or None, at_least=True)
        raise err from exc


def ensure_space(path: str | os.PathLike[str], needed: int) -> None:
    """Refuse before writing when the filesystem of ``path`` has less than ``needed`` bytes free.

    Only for exact estimates (a GGUF's planned tensor bytes): an overestimate would refuse a write that
    fits. Writers check again by failing, since other processes share the disk."""
    free = free_bytes(path)
    if free is not None and free < needed:
        raise DiskFullError(path, needed)


@contextmanager
def atomic_path(path: str | os.PathLike[str], needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic. It is removed on
    any error; a full disk leaves as DiskFullError naming ``path`` (``needed``: the writer's estimate).
    """
    final = Path(path)
    created = missing_folders(final.parent)
    try:
        with disk_full_as(final, needed):
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            os.close(fd)
            tmp_path = Path(tmp)
            try:
                with disk_full_as(final, partial=tmp_path):
                    yield tmp_path
                if tmp_path.is_file() and (tmp_path.stat().st_mode & 0o777) == 0o600:
                    tmp_path.chmod(0o666 & ~_umask())  # mkstemp's 0600, not the writer's choice: as open() would
                os.replace(tmp_path, final)
            finally:
                if tmp_path.exists():
                    tmp_path.unlink()
    except BaseException:
        remove_empty(created)
        raise


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def missing_folders(folder: str | os.PathLike[str]) -> list[Path]:
    """``folder`` and its parents that do not exist yet, deepest first: what a failed write removes
    again (remove_empty), so it leaves no empty output folder behind."""
    p = Path(folder)
    return [d for d in [p, *p.absolute().parents] if not d.exists()]


def remove_empty(folders: list[Path]) -> None:
    """Remove each folder that exists and is empty, in the order given (deepest first)."""
    for d in folders:
        try:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        except OSError:
            pass


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def cache_dir() -> Path:
    """The user cache for things the toolkit builds once and reuses (compiled helpers, calibration
    data): ``$ALLAVA_CACHE_DIR``, else ``$XDG_CACHE_HOME/allava-edge`` or ``~/.cache/allava-edge``."""
    env = os.environ.get("ALLAVA_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "allava-edge"


@contextmanager
def staging_folder(outdir: str | os.PathLike[str], needed: int | None = None) -> Iterator[Path]:
    """A temporary folder beside ``outdir`` for a writer that builds a whole folder and moves it in at
    the end (export/staging.py). It is removed whatever happens; on an error, so are the parents of
    ``outdir`` this call created, and a full disk leaves as DiskFullError naming ``outdir`` with the
    writer's estimate ``needed`` (or, without one, what the staging folder held when the disk filled)."""
    out = Path(outdir)
    created = missing_folders(out.parent)
    stage: Path | None = None
    try:
        with disk_full_as(out, needed):
            out.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
            with disk_full_as(out, partial=stage):
                try:
                    yield stage
                finally:
                    shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        remove_empty(created)
        raise


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, read in 1 MiB blocks (model files do not fit in memory twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
