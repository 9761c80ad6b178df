"""The per-variant manifest: what an export folder is, without relying on its name.

It lives in the core package because every stage after training reads or writes it (export,
quantize, runtimes, bench) and no stage may import another stage's internals.

Contract (ARCHITECTURE.md): every variant folder holds a manifest file (``MANIFEST``) with the
format, the precision, the checkpoint it came from (path + sha256), its files by role and their
sizes, and parity figures against that checkpoint (filled by ``export/check.py``). Runtimes,
quantizers and the bench read only this. The file name is spelled here and nowhere else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from allava.fileio import disk_full_as, missing_folders, remove_empty, write_json_atomic

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
LM_ROLE = "model"  # the file role holding the language model: the bytes a decode step reads (roofline)


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or lacks a field; the message names the file and field."""


@dataclass
class Manifest:
    """One export variant. Format-specific fields (e.g. GGUF's ``mmproj_precision``) live in ``extra``
    and are written at the top level of the JSON next to the common ones."""

    format: str
    precision: str
    files: dict[str, str]  # role -> file name inside the variant folder
    sizes: dict[str, int]  # role -> bytes, plus "total"
    source: dict[str, str]  # {"checkpoint": path, "sha256": fingerprint}
    created_by: str
    name: str = ""
    runtime: str = ""
    parity: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_files(cls, variant_dir: str | Path, files: dict[str, str | Path], **fields_: Any) -> Manifest:
        """A manifest whose sizes are read from the files on disk (so they cannot disagree). ``files``
        are paths like any other (absolute or relative to the current folder); they are stored
        relative to the variant folder, and may lie outside it ("../../onnx/x.onnx")."""
        vdir = Path(variant_dir)
        names = {role: os.path.relpath(Path(f).resolve(), vdir.resolve()) for role, f in files.items()}
        sizes = {role: path_bytes(vdir / n) for role, n in names.items()}
        sizes["total"] = sum(sizes.values())
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: v for k, v in fields_.items() if k not in known}
        return cls(files=names, sizes=sizes, extra=extra, **{k: v for k, v in fields_.items() if k in known})

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(data).__name__}")
        for key, kind in (("format", str), ("precision", str), ("files", dict)):
            if not isinstance(data.get(key), kind):
                raise ManifestError(f"{where}: field {key!r} must be a {kind.__name__}, got {data.get(key)!r}")
        if not all(isinstance(v, str) for v in data["files"].values()):
            raise ManifestError(f"{where}: field 'files' must map each role to a file name")
        known = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in data.items() if k in known}
        kw.setdefault("sizes", {})
        kw.setdefault("source", {})
        kw.setdefault("created_by", "")
        return cls(**kw, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {"schema_version": out.pop("schema_version"), **out, **self.extra}

    @classmethod
    def read(cls, variant_dir: str | Path) -> Manifest:
        path = Path(variant_dir) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{variant_dir}: no {MANIFEST}; not an export variant folder")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path}: unreadable ({exc})") from exc
        return cls.from_dict(data, str(path))

    def write(self, variant_dir: str | Path) -> Path:
        path = Path(variant_dir) / MANIFEST
        write_json_atomic(path, self.to_dict())
        path.chmod(0o644)  # mkstemp creates 0600; exports are meant to be shared
        return path

    def paths(self, variant_dir: str | Path) -> list[Path]:
        """Every file of the variant (what a runtime reads), in role order; a role that names a folder
        (a CoreML .mlpackage) contributes the files inside it."""
        out = []
        for name in self.files.values():
            p = Path(variant_dir) / name
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
        return out

    @property
    def total_bytes(self) -> int:
        return int(self.sizes.get("total") or sum(v for k, v in self.sizes.items() if k != "total"))

    @property
    def lm_bytes(self) -> int:
        """Language-model bytes read per decoded token (the roofline's numerator): the LM file and,
        when its weights live in an external data file (role "model_data"), that file too. A variant
        whose one weight file also holds the vision tower (a transformers folder such as GPTQ's)
        records the language model's share itself (``lm_bytes``)."""
        if "lm_bytes" in self.extra:
            return int(self.extra["lm_bytes"])
        return int(self.sizes.get(LM_ROLE) or self.total_bytes) + int(self.sizes.get(f"{LM_ROLE}_data", 0))


def path_bytes(path: Path) -> int:
    """Bytes of a file, or of every file below a folder (a package such as CoreML's .mlpackage)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


@contextmanager
def writing_variant(variant_dir: str | Path, needed: int | None = None) -> Iterator[list[Path]]:
    """All or nothing for a variant folder: yields a list the writer appends each finished file to;
    on any error those files are removed again, and so are the folder and any of its parents that
    this call found missing (when empty): a failed first export leaves no empty --outdir behind.

    Every exporter and quantizer needs this (a crash or a full disk must not leave a half-made variant
    that discovery would take for a real one); each file itself is written with fileio.atomic_path.
    ``needed`` (the writer's estimate of the variant's bytes) goes into the message of a full disk,
    which then names the variant folder."""
    vdir = Path(variant_dir)
    created = missing_folders(vdir)
    written: list[Path] = []
    try:
        with disk_full_as(vdir, needed):
            yield written
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        remove_empty(created)
        raise


def is_variant(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def find_manifests(root: str | Path) -> list[Path]:
    """Every variant folder below ``root`` (``root`` itself included), in a stable order."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(MANIFEST)) if root.is_dir() else []


def manifest_mtime(variant_dir: str | Path) -> float:
    """When the variant was completed (export writes the manifest last)."""
    return (Path(variant_dir) / MANIFEST).stat().st_mtime


def read_manifest(variant_dir: str | Path) -> dict[str, Any]:
    """The manifest as a plain dict (validated), for readers that only need a field or two."""
    return Manifest.read(variant_dir).to_dict()


def update_manifest(variant_dir: str | Path, **fields_: Any) -> Manifest:
    man = Manifest.read(variant_dir)
    data = man.to_dict()
    data.update(fields_)
    man = Manifest.from_dict(data, str(Path(variant_dir) / MANIFEST))
    man.write(variant_dir)
    return man


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GiB"
