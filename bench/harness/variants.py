"""Which variants exist, which a device may run, and building the missing ones.

Why through manifests and subprocesses: the export contract says a variant folder describes itself
(manifest.json: format, precision, files, sizes, source checkpoint), so discovery needs no naming
convention; and missing exports are built by running export/to_gguf.py and quantize/run.py as
programs, so the bench never depends on another stage's internals.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.profiles import DeviceProfile

REPO = Path(__file__).resolve().parents[2]
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
# working memory on top of the weights (KV cache, activations, runtime, Python): fraction + constant
MEM_OVERHEAD_FRACTION = 0.15
MEM_OVERHEAD_BYTES = 300 * 2**20
GGUF_TYPES = {"f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K_M", "q4_0": "Q4_0"}


@dataclass
class Variant:
    """One runnable model: the PyTorch reference (an HF folder) or an export variant folder."""

    format: str
    precision: str
    path: Path
    size_bytes: int  # on disk, every file the runtime reads
    lm_bytes: int  # language-model weight bytes read per decoded token (roofline)
    est_memory_bytes: int  # what loading it should cost (memory-budget check)
    files: list[Path] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.format}:{self.precision}"


def _safetensors_numel(path: Path) -> tuple[int, int]:
    """(all parameters, language-model parameters) from a safetensors header, without loading it."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total = lm = 0
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        numel = 1
        for d in meta["shape"]:
            numel *= d
        total += numel
        if "language_model" in key or key.startswith("lm_head"):
            lm += numel
    return total, lm


def pytorch_variant(checkpoint: Path) -> Variant:
    """The FP32 reference: runtimes/torch_runtime loads every checkpoint as float32."""
    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{checkpoint}: no *.safetensors weights")
    total = lm = 0
    for f in files:
        t, lmn = _safetensors_numel(f)
        total, lm = total + t, lm + lmn
    fp32 = total * 4
    on_disk = sum(f.stat().st_size for f in files) + (checkpoint / "config.json").stat().st_size
    return Variant("pytorch", "FP32", checkpoint, on_disk, lm * 4, _with_overhead(fp32),
                   [checkpoint / "config.json", *files])


def _with_overhead(weight_bytes: int) -> int:
    return int(weight_bytes * (1 + MEM_OVERHEAD_FRACTION) + MEM_OVERHEAD_BYTES)


def export_variant(vdir: Path) -> Variant:
    man = json.loads((vdir / "manifest.json").read_text())
    files = [vdir / f for f in man.get("files", {}).values()]
    sizes = man.get("sizes", {})
    total = int(sizes.get("total") or sum(f.stat().st_size for f in files if f.is_file()))
    lm = int(sizes.get("model") or total)
    return Variant(man["format"], str(man["precision"]).upper(), vdir, total, lm, _with_overhead(total), files, man)


def discover(exports: Path) -> list[Variant]:
    """Every variant folder (a manifest.json) under ``exports``, in a stable order."""
    if not exports.is_dir():
        return []
    out = []
    for mf in sorted(exports.rglob("manifest.json")):
        try:
            out.append(export_variant(mf.parent))
        except (KeyError, ValueError, OSError):
            continue  # a folder that is not (yet) a variant; export writes manifests last
    return out


@dataclass
class Selection:
    run: list[Variant]
    skipped: list[dict[str, Any]]  # {"variant", "path", "reason"}


def select(variants: list[Variant], profile: DeviceProfile, wanted: list[str] | None) -> Selection:
    """Filter by the profile's allowed list, the user's --variants and the memory budget.

    The reference is kept even when the profile does not list it (every delta needs it), but the
    memory budget applies to it like to any other variant."""
    run, skipped = [], []
    budget = profile.memory_budget_bytes
    for v in variants:
        ref = profile.is_reference(v.format, v.precision)
        if wanted and not ref and not any(w.lower() in (v.name.lower(), v.precision.lower()) for w in wanted):
            continue
        if not ref and not profile.allows(v.format, v.precision):
            continue
        if v.est_memory_bytes > budget:
            skipped.append({"variant": v.name, "path": str(v.path), "size_bytes": v.size_bytes,
                            "reason": f"does not fit the {profile.name} memory budget: needs ~{v.est_memory_bytes / 2**30:.2f} GiB "
                                      f"(weights + {int(MEM_OVERHEAD_FRACTION * 100)}% + {MEM_OVERHEAD_BYTES >> 20} MiB), "
                                      f"budget {profile.memory_budget_gib:.2f} GiB"})
            continue
        run.append(v)
    return Selection(run, skipped)


def _stale(vdir: Path, checkpoint: Path) -> bool:
    """An export made from another checkpoint, or before the checkpoint's weights last changed."""
    try:
        man = json.loads((vdir / "manifest.json").read_text())
    except (OSError, ValueError):
        return True
    src = Path(man.get("source", {}).get("checkpoint", ""))
    if src.resolve() != checkpoint.resolve():
        return True
    newest = max((p.stat().st_mtime for p in checkpoint.glob("*.safetensors")), default=0.0)
    return newest > (vdir / "manifest.json").stat().st_mtime


def ensure_gguf(checkpoint: Path, exports: Path, precisions: list[str], log: list[str]) -> None:
    """Build missing or stale GGUF variants under ``exports/gguf`` by running the export stage's CLIs.

    F16 comes from export/to_gguf.py; the others from quantize/run.py (which quantizes the F16/F32 folder).
    Failures are logged, not raised: the run goes on and the missing variants are reported."""
    gg = exports / "gguf"
    wanted = [GGUF_TYPES.get(p.lower(), p.upper()) for p in precisions]
    need_f16 = "F16" in wanted or any(not (gg / w / "manifest.json").is_file() for w in wanted)
    if need_f16 and _stale(gg / "F16", checkpoint):
        _run([sys.executable, str(REPO / "export/to_gguf.py"), str(checkpoint), "--outdir", str(gg),
             "--outtype", "f16"], log, "export F16")
    todo = [w for w in wanted if w != "F16" and ((not (gg / w / "manifest.json").is_file()) or _stale(gg / w, checkpoint))]
    if todo and (gg / "F16" / "manifest.json").is_file():
        _run([sys.executable, str(REPO / "quantize/run.py"), "--format", "gguf", "--types", ",".join(t.lower() for t in todo),
              "--export", str(gg)], log, f"quantize {','.join(todo)}")


def _run(cmd: list[str], log: list[str], what: str) -> bool:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        log.append(f"{what} failed (exit {out.returncode}): {out.stderr.strip()[-600:]}")
        return False
    log.append(f"{what}: ok")
    return True
