"""Putting a finished export in place: every exporter writes into a staging folder beside its output
and moves it in only when complete, so a crash never leaves a half-written variant."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def move_into_place(stage: Path, outdir: Path, replace: bool) -> None:
    """A new folder is renamed in one step, and so is a replacement (the old folder is moved aside
    first); into an existing export of the same checkpoint each file is replaced atomically."""
    if replace:
        old = outdir.with_name(f".{outdir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(outdir, old)
        os.replace(stage, outdir)
        shutil.rmtree(old, ignore_errors=True)
        return
    if not outdir.exists() or not any(outdir.iterdir()):
        if outdir.exists():
            outdir.rmdir()
        os.replace(stage, outdir)
        return
    for src in sorted(stage.rglob("*")):
        if src.is_file():
            dst = outdir / src.relative_to(stage)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
