"""Which variants exist, which a device may run, and building the missing ones.

Why through manifests, the format table and subprocesses: a variant folder describes itself (its
manifest: format, precision, files, sizes, source checkpoint), so discovery needs no naming
convention; the format table (allava/formats.py) says which precisions a format has, which stage
program writes each and what it should cost; and missing variants are built by running those
programs, so the bench never depends on another stage's internals and a new format needs no code
here.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allava.formats import REFERENCE, Format, Precision, all_formats, get_format
from allava.variant import Manifest, ManifestError, find_manifests, manifest_mtime
from allava.weights_index import is_language_model, tensor_entries
from bench.harness.profiles import DeviceProfile

REPO = Path(__file__).resolve().parents[2]
# working memory on top of the weights (KV cache, activations, runtime, Python): fraction + constant
# Measured at the ALLaVA-3B shape after the memory cuts (docs/memory.md): a GGUF variant's peak RSS is its
# files + 210-380 MiB; 3% + 300 MiB keeps those inside and lets the run (whose measured peak is checked
# against the budget afterwards) decide the close cases rather than the estimate.
MEM_OVERHEAD_FRACTION = 0.03
MEM_OVERHEAD_BYTES = 300 * 2**20


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
    manifest: Manifest | None = None

    @property
    def name(self) -> str:
        return f"{self.format}:{self.precision}"

    @property
    def not_runnable(self) -> str | None:
        """Why this host cannot run the variant (from the format table), or None."""
        return get_format(self.format).not_runnable_reason()


def with_overhead(weight_bytes: int) -> int:
    return int(weight_bytes * (1 + MEM_OVERHEAD_FRACTION) + MEM_OVERHEAD_BYTES)


def checkpoint_params(checkpoint: Path) -> tuple[int, int]:
    """(language-model parameters, all other parameters) from the safetensors headers, without loading."""
    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{checkpoint}: no *.safetensors weights")
    total = lm = 0
    for key, meta in tensor_entries(checkpoint):
        numel = 1
        for d in meta["shape"]:
            numel *= d
        total += numel
        if is_language_model(key):
            lm += numel
    return lm, total - lm


def pytorch_variant(checkpoint: Path) -> Variant:
    """The reference: runtimes/torch_runtime loads the checkpoint in its table precision (FP32)."""
    prec = get_format(REFERENCE).precisions[0]
    files = sorted(checkpoint.glob("*.safetensors"))
    lm, other = checkpoint_params(checkpoint)
    on_disk = sum(f.stat().st_size for f in files) + (checkpoint / "config.json").stat().st_size
    return Variant(REFERENCE, prec.name, checkpoint, on_disk, int(lm * prec.bits_per_weight / 8),
                   with_overhead(prec.estimate_bytes(lm, other)), [checkpoint / "config.json", *files])


def export_variant(vdir: Path) -> Variant:
    man = Manifest.read(vdir)
    get_format(man.format)  # an unknown format fails here, with the known ones listed
    total = man.total_bytes or sum(f.stat().st_size for f in man.paths(vdir) if f.is_file())
    return Variant(man.format, man.precision.upper(), vdir, total, man.lm_bytes, with_overhead(total),
                   man.paths(vdir), man)


def discover(exports: Path, log: list[str] | None = None) -> list[Variant]:
    """Every variant folder (one with a manifest) under ``exports``, in a stable order."""
    out = []
    for vdir in find_manifests(exports):
        try:
            out.append(export_variant(vdir))
        except (KeyError, ManifestError, OSError) as exc:  # not (yet) a variant, or a format nobody registered
            if log is not None:
                log.append(f"ignored {vdir}: {exc}")
    return out


@dataclass
class Selection:
    run: list[Variant]
    skipped: list[dict[str, Any]]  # {"variant", "path", "reason"}


def _wanted(name: str, precision: str, wanted: list[str] | None) -> bool:
    """--variants matches a whole name (gguf:Q8_0), a precision (Q8_0) or a format (coreml: all of its precisions)."""
    return not wanted or any(w.lower() in (name.lower(), precision.lower(), name.split(":")[0].lower()) for w in wanted)


def select(variants: list[Variant], profile: DeviceProfile, wanted: list[str] | None) -> Selection:
    """Filter by the profile's allowed list, the user's --variants and the memory budget.

    The reference is kept even when the profile does not list it (every delta needs it), but the
    memory budget applies to it like to any other variant."""
    run, skipped = [], []
    budget = profile.memory_budget_bytes
    for v in variants:
        ref = profile.is_reference(v.format, v.precision)
        if not ref and not (_wanted(v.name, v.precision, wanted) and profile.allows(v.format, v.precision)):
            continue
        if v.est_memory_bytes > budget:
            skipped.append({"variant": v.name, "path": str(v.path), "size_bytes": v.size_bytes, "est_memory_bytes": v.est_memory_bytes,
                            "reason": f"does not fit the {profile.name} memory budget: needs ~{v.est_memory_bytes / 2**30:.2f} GiB "
                                      f"(weights + {int(MEM_OVERHEAD_FRACTION * 100)}% + {MEM_OVERHEAD_BYTES >> 20} MiB), "
                                      f"budget {profile.memory_budget_gib:.2f} GiB"})
            continue
        run.append(v)
    return Selection(run, skipped)


def wanted_precisions(profile: DeviceProfile, wanted: list[str] | None) -> list[tuple[Format, Precision]]:
    """Every (format, precision) of the table that the profile allows and --variants asks for."""
    return [(fmt, p) for fmt in all_formats() if fmt.name != REFERENCE for p in fmt.precisions
            if profile.allows(fmt.name, p.name) and _wanted(f"{fmt.name}:{p.name}", p.name, wanted)]


def fits_budget(precision: Precision, params: tuple[int, int], profile: DeviceProfile) -> bool:
    """Would the variant fit the memory budget? Estimated from the table's bits per weight and the
    checkpoint's (language-model, other) parameter counts, so no minutes are spent building a
    variant the budget will skip anyway."""
    return with_overhead(precision.estimate_bytes(*params)) <= profile.memory_budget_bytes


def _stale(v: Variant, checkpoint: Path) -> bool:
    """An export made from another checkpoint, or before the checkpoint's weights last changed."""
    src = Path(v.manifest.source.get("checkpoint", "")) if v.manifest else Path()
    if src.resolve() != checkpoint.resolve():
        return True
    newest = max((p.stat().st_mtime for p in checkpoint.glob("*.safetensors")), default=0.0)
    return newest > manifest_mtime(v.path)


def ensure_variants(checkpoint: Path, exports: Path, wanted: list[tuple[Format, Precision]], log: list[str],
                    random_weights: bool = False) -> None:
    """Build missing or stale variants with the stage programs the format table names.

    Export-made precisions come from the format's export command; the others from its quantize
    command, after the export precision it quantizes from (``quantize_source``) exists; with
    ``random_weights`` the format's ``random_weights_args`` are added (e.g. GPTQ calibrates on a few
    samples: random weights make calibration quality moot). Failures are logged, not raised: the
    run goes on and reports what is missing."""
    by_format: dict[str, list[Precision]] = {}
    for fmt, p in wanted:
        by_format.setdefault(fmt.name, []).append(p)
    for name, precisions in by_format.items():
        fmt = get_format(name)
        outdir = exports / fmt.folder if fmt.folder else exports
        fresh = {v.precision for v in discover(outdir) if v.format == name and not _stale(v, checkpoint)}
        todo = [p for p in precisions if p.name.upper() not in fresh]
        quantized = [p for p in todo if p.made_by[0] == "quantize" and fmt.quantize]
        exported = [p for p in todo if p not in quantized and "export" in p.made_by and fmt.export]
        source = fmt.precision(fmt.quantize_source) if quantized and fmt.quantize_source else None
        if source is not None and source.name not in fresh and source not in exported:
            exported.insert(0, source)
        for p in exported:
            assert fmt.export is not None
            ok = _run(fmt.export.argv(checkpoint=str(checkpoint), outdir=str(outdir), precision=p.cli, name=p.name), log,
                      f"export {name}:{p.name}")
            if ok:
                fresh.add(p.name)
        if quantized and (source is None or source.name in fresh):
            assert fmt.quantize is not None
            values = {"checkpoint": str(checkpoint), "outdir": str(outdir)}
            extra = list(fmt.random_weights_args) if random_weights else []
            if fmt.quantize.per_precision:
                for p in quantized:
                    _run(fmt.quantize.argv(**values, precision=p.cli, name=p.name, precisions=p.cli) + extra, log,
                         f"quantize {name}:{p.name}")
            else:
                _run(fmt.quantize.argv(**values, precisions=",".join(p.cli for p in quantized)) + extra, log,
                     f"quantize {name}:{','.join(p.name for p in quantized)}")


def _run(cmd: list[str], log: list[str], what: str) -> bool:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        log.append(f"{what} failed (exit {out.returncode}): {out.stderr.strip()[-600:]}")
        return False
    log.append(f"{what}: ok")
    return True
