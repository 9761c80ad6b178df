"""The per-variant manifest: what an export folder is, without relying on its name.

It lives in the core package because every stage after training reads or writes it (export,
quantize, runtimes, bench) and no stage may import another stage's internals.

Contract (ARCHITECTURE.md): every variant folder holds a `manifest.json` with format, precision,
the checkpoint it came from (path + sha256), file names and sizes, and parity figures against that
checkpoint (filled by `export/check.py`). Runtimes, quantizers and the bench read only this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from allava.fileio import write_json_atomic

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def read_manifest(variant_dir: str | Path) -> dict[str, Any]:
    path = Path(variant_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{variant_dir}: no {MANIFEST}; not an export variant folder")
    return json.loads(path.read_text())


def write_manifest(variant_dir: str | Path, data: dict[str, Any]) -> Path:
    data = {"schema_version": SCHEMA_VERSION, **data}
    path = Path(variant_dir) / MANIFEST
    write_json_atomic(path, data)
    path.chmod(0o644)
    return path


def update_manifest(variant_dir: str | Path, **fields: Any) -> dict[str, Any]:
    data = read_manifest(variant_dir)
    data.update(fields)
    write_manifest(variant_dir, data)
    return data


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GiB"
