"""Find what to synthesise: an image folder, a manifest (JSONL/JSON/CSV/parquet) or a HF dataset.

Every input row becomes either an :class:`Item` (to send) or an input-stage reject (too small,
undecodable, duplicate, missing file), so that each input ends in exactly one of dataset or
rejects. Keys are content hashes, not positions: they stay stable when inputs are re-listed in
another order, which is what makes the journal's resume exact.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MODES = ("laion", "vflan", "text")

# Column aliases, first match wins: LAION metadata uses URL/TEXT, img2dataset url/caption.
PATH_COLS = ("path", "image_path", "file", "filepath", "image", "img")
URL_COLS = ("url", "image_url", "URL")
CAPTION_COLS = ("caption", "original_caption", "TEXT", "text", "alt", "alt_text")
INSTRUCTION_COLS = ("instruction", "question", "prompt", "query", "input")


class InputError(Exception):
    """Input cannot be used at all (missing folder, unreadable manifest): stops before any call."""


@dataclass
class Item:
    key: str  # journal key and record id stem, e.g. "laion_3f2a..."
    index: int  # input order, to write outputs in a stable order
    source: str  # where it came from (path, url or dataset row)
    image_path: Path | None = None  # local file sent to the model
    image_name: str | None = None  # file name under <output>/images/
    width: int = 0
    height: int = 0
    caption: str | None = None  # original caption / alt text, kept in records
    url: str | None = None
    instruction: str | None = None  # vflan instruction or text question
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class InputReject:
    source: str
    reason: str
    key: str | None = None


@dataclass
class ScanResult:
    items: list[Item]
    rejects: list[InputReject]
    counts: dict[str, int]


@dataclass
class Row:
    """One raw input before image checks."""

    source: str
    path: Path | None = None
    url: str | None = None
    pil: Image.Image | None = None  # HF datasets hand us decoded images
    caption: str | None = None
    instruction: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _pick(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    for n in names:
        if n in row and row[n] not in (None, ""):
            return row[n]
    return None


def _row_from_mapping(obj: dict[str, Any], source: str, base: Path | None) -> Row:
    path_val = _pick(obj, PATH_COLS)
    pil = path_val if isinstance(path_val, Image.Image) else None
    path = None
    if isinstance(path_val, str):
        p = Path(path_val).expanduser()
        path = p if p.is_absolute() or base is None else base / p
    elif isinstance(path_val, dict) and (path_val.get("bytes") or path_val.get("path")):  # parquet image struct
        if path_val.get("bytes"):
            try:
                pil = Image.open(io.BytesIO(path_val["bytes"]))
            except (UnidentifiedImageError, OSError):
                pil = None
        elif base is not None:
            path = base / path_val["path"]
    known = set(PATH_COLS) | set(URL_COLS) | set(CAPTION_COLS) | set(INSTRUCTION_COLS)
    extra = {k: v for k, v in obj.items() if k not in known and isinstance(v, (str, int, float, bool))}
    if "answer" in obj and isinstance(obj["answer"], str):
        extra["original_answer"] = extra.pop("answer")
    caption = _pick(obj, CAPTION_COLS)
    instruction = _pick(obj, INSTRUCTION_COLS)
    return Row(
        source=source,
        path=path,
        url=_pick(obj, URL_COLS),
        pil=pil,
        caption=str(caption) if caption is not None else None,
        instruction=str(instruction) if instruction is not None else None,
        extra=extra,
    )


def rows_from_folder(folder: Path) -> Iterator[Row]:
    """Images under ``folder`` (recursive, sorted); img2dataset sidecars (.txt caption, .json url) are read."""
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder}")
    for p in sorted(q for q in folder.rglob("*") if q.suffix.lower() in IMAGE_EXTS and q.is_file()):
        caption = url = None
        txt, meta = p.with_suffix(".txt"), p.with_suffix(".json")
        if txt.is_file():
            caption = txt.read_text(encoding="utf-8", errors="replace").strip() or None
        if meta.is_file():
            try:
                m = json.loads(meta.read_text(encoding="utf-8"))
                url = m.get("url") if isinstance(m, dict) else None
                caption = caption or (m.get("caption") if isinstance(m, dict) else None)
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass
        yield Row(source=str(p), path=p, caption=caption, url=url)


def rows_from_manifest(path: Path) -> list[Row]:
    """Rows of a JSONL/JSON/CSV/TSV/parquet manifest; relative paths are relative to the manifest."""
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    base = path.parent
    try:
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise InputError("reading a parquet manifest needs pyarrow: pip install pyarrow") from None
            objs = pq.read_table(path).to_pylist()
        elif suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8") as f:
                objs = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        elif suffix == ".json":
            objs = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(objs, list):
                raise InputError(f"manifest {path}: expected a JSON list of objects")
        elif suffix == ".jsonl":
            objs = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        objs.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise InputError(f"manifest {path} line {n}: not valid JSON ({exc.msg})") from None
        else:
            raise InputError(f"manifest {path}: unknown format {suffix!r} (use .jsonl, .json, .csv, .tsv or .parquet)")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, OSError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    except InputError:
        raise
    except Exception as exc:  # pyarrow raises its own types for corrupt files
        raise InputError(f"cannot read manifest {path}: {type(exc).__name__}: {exc}") from None
    rows = []
    for i, obj in enumerate(objs):
        if not isinstance(obj, dict):
            raise InputError(f"manifest {path} row {i + 1}: expected an object, got {type(obj).__name__}")
        rows.append(_row_from_mapping(obj, f"{path.name}#{i + 1}", base))
    return rows


def rows_from_dataset(dataset_id: str, split: str, limit: int | None) -> list[Row]:
    """Rows of a Hugging Face dataset (``datasets`` is optional: a clear error when absent)."""
    try:
        import datasets
    except ImportError:
        raise InputError("--dataset needs the 'datasets' package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:
        raise InputError(f"cannot load dataset {dataset_id!r} split {split!r}: {type(exc).__name__}: {exc}") from None
    n = len(ds) if limit is None else min(limit, len(ds))
    return [_row_from_mapping(dict(ds[i]), f"{dataset_id}[{split}]#{i}", None) for i in range(n)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def item_key(mode: str, image_sha: str | None, text: str | None) -> str:
    """Content key: image hash (laion), image hash + instruction (vflan), question hash (text)."""
    if mode == "laion":
        return f"laion_{image_sha[:20]}"
    h = hashlib.sha256(((image_sha or "") + "\0" + (text or "")).encode("utf-8")).hexdigest()
    return f"{mode}_{h[:20]}"


def _fetch_url(url: str, timeout: float = 30.0) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "allava-edge-synth/0.1"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URLs come from the user's manifest
        return resp.read(64 * 1024 * 1024)


def _row_bytes(row: Row) -> tuple[bytes, str]:
    """The image bytes and a file extension; raises OSError/ValueError when unavailable."""
    if row.pil is not None:
        buf = io.BytesIO()
        img = row.pil
        img.save(buf, format="PNG")
        return buf.getvalue(), ".png"
    if row.path is not None:
        if not row.path.is_file():
            raise FileNotFoundError(f"file not found: {row.path}")
        return row.path.read_bytes(), row.path.suffix.lower() or ".jpg"
    if row.url:
        ext = Path(row.url.split("?")[0]).suffix.lower()
        return _fetch_url(row.url), ext if ext in IMAGE_EXTS else ".jpg"
    raise ValueError("row has neither an image path nor a url")


def scan(mode: str, rows: list[Row], cache_dir: Path, min_short_side: int, limit: int | None = None) -> ScanResult:
    """Check, filter and de-duplicate rows into items.

    Images are fully decoded once (a header-only check passes truncated files that the model
    would choke on). Downloaded or dataset images are saved under ``cache_dir`` so a rerun
    does not fetch them again and the final records can point at them.
    """
    items: list[Item] = []
    rejects: list[InputReject] = []
    counts = {"inputs": 0, "too_small": 0, "undecodable": 0, "duplicates": 0, "missing": 0, "kept": 0}
    seen: dict[str, str] = {}
    image_info: dict[str, tuple[Path, str, int, int]] = {}
    for row in rows:
        if limit is not None and counts["inputs"] >= limit:
            break
        counts["inputs"] += 1
        if mode == "text":
            if not row.instruction:
                counts["missing"] += 1
                rejects.append(InputReject(row.source, "input: no instruction/question text"))
                continue
            key = item_key(mode, None, row.instruction)
            if key in seen:
                counts["duplicates"] += 1
                rejects.append(InputReject(row.source, f"input: duplicate of {seen[key]}", key))
                continue
            seen[key] = row.source
            items.append(Item(key, len(items), row.source, instruction=row.instruction, extra=row.extra))
            continue
        if mode == "vflan" and not row.instruction:
            counts["missing"] += 1
            rejects.append(InputReject(row.source, "input: vflan row has no instruction"))
            continue
        try:
            data, ext = _row_bytes(row)
        except FileNotFoundError as exc:
            counts["missing"] += 1
            rejects.append(InputReject(row.source, f"input: {exc}"))
            continue
        except (OSError, ValueError) as exc:
            counts["undecodable"] += 1
            rejects.append(InputReject(row.source, f"input: cannot read image: {exc}"))
            continue
        sha = _sha(data)
        key = item_key(mode, sha, row.instruction)
        if key in seen:
            counts["duplicates"] += 1
            rejects.append(InputReject(row.source, f"input: duplicate of {seen[key]}", key))
            continue
        if sha not in image_info:
            try:
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
                    w, h = img.size
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
                counts["undecodable"] += 1
                rejects.append(InputReject(row.source, f"input: undecodable image: {exc}", key))
                continue
            name = f"{sha[:20]}{ext}"
            local = row.path
            if local is None:  # url or dataset: keep a copy, it is what we send and what records point at
                cache_dir.mkdir(parents=True, exist_ok=True)
                local = cache_dir / name
                if not local.exists():
                    tmp = local.with_suffix(local.suffix + ".part")
                    tmp.write_bytes(data)
                    tmp.replace(local)
            image_info[sha] = (local, name, w, h)
        local, name, w, h = image_info[sha]
        if min(w, h) < min_short_side:
            counts["too_small"] += 1
            rejects.append(InputReject(row.source, f"input: short side {min(w, h)} px < {min_short_side}", key))
            continue
        seen[key] = row.source
        items.append(
            Item(key, len(items), row.source, local, name, w, h, row.caption, row.url, row.instruction, row.extra)
        )
    counts["kept"] = len(items)
    return ScanResult(items, rejects, counts)


def link_or_copy(src: Path, dst: Path) -> None:
    """Place an image under the output folder: hard link when possible (no extra disk), else copy."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    if tmp.exists():
        tmp.unlink()
    try:
        tmp.hardlink_to(src)
    except OSError:
        shutil.copy2(src, tmp)
    tmp.replace(dst)
