"""GGUF quantization with llama.cpp's own quantizer (llama_cpp.llama_model_quantize).

  python quantize/run.py --format gguf --types q8_0,q5_k_m,q4_k_m,q4_0 --export exports/tiny/gguf

--export is an export folder made by export/to_gguf.py (its F32, F16 or BF16 variant is the source,
F32 preferred) or one variant folder. Each type becomes a sibling variant folder
(e.g. exports/tiny/gguf/Q4_K_M/) with the quantized language model, the vision projector (F16 by
default: hard-linked from the source; --mmproj q8_0, or a type such as q4_k_m-vq8_0, writes a Q8_0
one with export/to_gguf.py and shares it between the variants that use it) and a manifest. The types are the format table's quantize precisions (allava/formats.py). K-quants need
row sizes divisible by 256; llama.cpp falls back to another type per tensor otherwise (it says so
in its log). Files are written to a temporary name, read back, then renamed.

Importance matrix (--imatrix auto|FILE): llama.cpp's quantizer weighs each weight's rounding error
by how large its input channel is at inference. `auto` computes one with image + text forward
passes of the checkpoint in PyTorch (quantize/gguf_imatrix.py; --text-only drops the images),
on the built-in world's conversations unless --calibration/--images say otherwise, seeded (--seed,
--n-samples), saves it beside the variants as imatrix-<kind>-s<seed>-n<N>.gguf and hands it to
llama.cpp's own `llama-quantize --imatrix` (built by scripts/build_llama_cpp.sh). The manifest
records the calibration (data, samples, seed, kind, file, sha256, entries llama.cpp loaded).
Types llama.cpp cannot make without one (IQ3_XXS, IQ2_M) are refused without --imatrix.

  python quantize/run.py --format gguf --types q4_k_m,q3_k_m,iq4_xs --imatrix auto --export outputs/exports/gguf
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from allava.cli import EXIT_DISK_FULL, exit_code
from allava.fileio import DiskFullError, atomic_path, disk_nearly_full
from allava.formats import get_format, split_gguf_precision
from allava.variant import Manifest, ManifestError, find_manifests, human_size, is_variant, writing_variant
from quantize.gguf_imatrix import make_imatrix, read_imatrix, sha256
from quantize.gptq_calibration import CalibrationError, add_calibration_args, spec_from_args

FORMAT = get_format("gguf")
SOURCE_ORDER = [p.name for p in FORMAT.made_by("export") if p.bits_per_weight >= 16]  # F32, F16, BF16
LLAMA_QUANTIZE = Path(os.environ.get("ALLAVA_LLAMA_QUANTIZE", Path(__file__).resolve().parents[1]
                                     / ".cache/llama-cpp-tools/bin/llama-quantize"))


class QuantizeError(RuntimeError):
    """The input cannot be quantized; the message says which file and why."""


def find_source(export: Path) -> Path:
    """The highest-precision GGUF variant under `export` (or `export` itself when it is a variant)."""
    if is_variant(export):
        return export
    for prec in SOURCE_ORDER:
        if is_variant(export / prec):
            return export / prec
    raise QuantizeError(f"{export}: no {'/'.join(SOURCE_ORDER)} GGUF variant found (run export/to_gguf.py first)")


def _read_arch(path: Path) -> str:
    """The file's architecture, read back with the gguf package; a truncated file is an error here."""
    import gguf

    try:
        field = gguf.GGUFReader(path).fields.get("general.architecture")
    except Exception as exc:  # truncated files surface as ValueError/IndexError/struct errors
        raise QuantizeError(f"{path}: unreadable GGUF after quantizing ({type(exc).__name__}: {exc})") from exc
    return field.contents() if field is not None else ""


def _link_or_copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _mmproj(src: Path, man: Manifest, vdir: Path, precision: str) -> Path:
    """A projector of the wanted precision in ``vdir``: shared (hard link) from a sibling variant that
    has one, else written from the source checkpoint by the export stage's program."""
    for d in [src, *find_manifests(src.parent)]:
        try:
            dm = Manifest.read(d)
        except (FileNotFoundError, ManifestError):
            continue
        if dm.format == FORMAT.name and dm.extra.get("mmproj_precision") == precision:
            out = vdir / dm.files["mmproj"]
            if d.resolve() != vdir.resolve():
                _link_or_copy(d / dm.files["mmproj"], out)
            return out
    out = vdir / f"mmproj-{man.name}-{precision}.gguf"
    cmd = [sys.executable, "-m", "export.to_gguf", man.source["checkpoint"], "--mmproj-only", str(out),
           "--mmproj-outtype", precision.lower()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == EXIT_DISK_FULL:  # its one line already names the file and the space
        raise DiskFullError(out, message=proc.stderr.strip().splitlines()[-1].removeprefix("error: "))
    if proc.returncode != 0:
        raise QuantizeError(f"writing the {precision} projector failed: {proc.stderr.strip()[-400:]}")
    return out


def _llama_quantize(src: Path, dst: Path, lm_type: str, threads: int, imatrix: Path) -> int:
    """llama.cpp's own quantize program with --imatrix; returns the entries it loaded (its log says so)."""
    if not LLAMA_QUANTIZE.is_file():
        raise QuantizeError(f"{LLAMA_QUANTIZE}: llama-quantize not built (run scripts/build_llama_cpp.sh); "
                            "it is what reads an --imatrix")
    proc = subprocess.run([str(LLAMA_QUANTIZE), "--imatrix", str(imatrix), str(src), str(dst), lm_type, str(threads)],
                          capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if os.environ.get("ALLAVA_LLAMA_VERBOSE"):
        print(log, file=sys.stderr)
    if proc.returncode != 0 and disk_nearly_full(dst):
        raise DiskFullError(dst)
    if proc.returncode != 0:
        tail = [ln for ln in log.splitlines() if "error" in ln.lower() or "failed" in ln.lower()][-3:]
        raise QuantizeError(f"llama-quantize --imatrix {imatrix} ({lm_type}) failed with code {proc.returncode}: "
                            f"{' '.join(tail) or log.strip()[-300:]}")
    m = re.search(r"loaded (\d+) importance matrix entries", log)
    if not m or int(m.group(1)) == 0:
        raise QuantizeError(f"{imatrix}: llama-quantize loaded no importance matrix entries from it")
    return int(m.group(1))


def quantize_gguf(export: str | Path, qtype: str, threads: int | None = None, mmproj: str = "f16",
                  imatrix: Path | None = None, calibration: dict | None = None) -> Path:
    """Make one quantized variant next to the source variant; returns its folder.

    A precision that names the projector's type ("q4_k_m-vq8_0") takes it over ``mmproj``. With
    ``imatrix`` (a llama.cpp imatrix file) llama-quantize weighs the rounding by it and the manifest
    records ``calibration`` (how the file was made) with the entries llama.cpp loaded."""
    import llama_cpp as L

    from runtimes.llamacpp_runtime import install_logger

    install_logger()  # llama.cpp's quantize log goes to a buffer (ALLAVA_LLAMA_VERBOSE=1 shows it)
    try:
        prec = FORMAT.precision(qtype).name
    except KeyError as exc:
        raise QuantizeError(str(exc)) from exc
    if prec not in {p.name for p in FORMAT.made_by("quantize")}:
        raise QuantizeError(f"{prec} is not made by the quantizer; use export/to_gguf.py --outtype {qtype}")
    prec_bits = FORMAT.precision(qtype).bits_per_weight
    if FORMAT.precision(qtype).needs_imatrix and imatrix is None:
        raise QuantizeError(f"{prec} needs an importance matrix (llama.cpp refuses it without one): "
                            "add --imatrix auto or --imatrix FILE")
    lm_type, vision_type = split_gguf_precision(prec)
    mmproj = vision_type or mmproj
    src = find_source(Path(export))
    man = Manifest.read(src)
    if man.format != FORMAT.name:
        raise QuantizeError(f"{src}: manifest format is {man.format!r}, not {FORMAT.name}")
    vdir = src.parent / prec
    lm_out = vdir / f"{man.name}-{prec}.gguf"
    t0 = time.time()
    try:  # the LM file at this precision (a full disk's "needed ~")
        needed = int(man.sizes.get("model", 0) * prec_bits / FORMAT.precision(man.precision).bits_per_weight)
    except KeyError:
        needed = None
    with writing_variant(vdir, needed) as written:
        with atomic_path(lm_out) as tmp:
            nthread = threads or os.cpu_count() or 1
            if imatrix is not None:
                entries = _llama_quantize(src / man.files["model"], tmp, lm_type, nthread, imatrix)
                calibration = {**(calibration or {}), "entries_loaded": entries}
            else:
                params = L.llama_model_quantize_default_params()
                params.ftype = getattr(L, f"LLAMA_FTYPE_MOSTLY_{lm_type}")
                params.nthread = nthread
                rc = L.llama_model_quantize(str(src / man.files["model"]).encode(), str(tmp).encode(),
                                            ctypes.byref(params))
                if rc != 0 and disk_nearly_full(tmp):  # llama.cpp logs the reason and returns 1
                    raise DiskFullError(lm_out, needed)
                if rc != 0:
                    raise QuantizeError(f"llama_model_quantize({lm_type}) failed with code {rc}")
            arch = _read_arch(tmp)
            if arch != "phi2":
                raise QuantizeError(f"{tmp}: quantized file has architecture {arch!r}")
        written.append(lm_out)
        lm_out.chmod(0o644)
        mm_out = _mmproj(src, man, vdir, mmproj.upper())
        written.append(mm_out)
        mm_out.chmod(0o644)
        out = Manifest.for_files(
            vdir, {"model": lm_out, "mmproj": mm_out}, format=FORMAT.name, precision=prec, name=man.name,
            source=man.source, runtime="llama.cpp",
            created_by=f"quantize/run.py ({'llama-quantize --imatrix' if imatrix else 'llama_model_quantize'})",
            mmproj_precision=mmproj.upper(), quantized_from={"variant": src.name, "precision": man.precision},
            **({"imatrix": calibration} if imatrix is not None else {}))
        out.write(vdir)
        for stale in vdir.glob("*.gguf"):  # a re-run with another --mmproj leaves no orphan files
            if stale not in (lm_out, mm_out):
                stale.unlink()
    imx = f"  imatrix {imatrix.name}" if imatrix is not None else ""
    print(f"  {prec:<8} {human_size(out.sizes['model']):>12} LM  {human_size(out.sizes['mmproj']):>12} mmproj "
          f"({time.time() - t0:.1f} s){imx}  -> {vdir}", flush=True)
    return vdir


def main(argv: list[str] | None = None) -> int:
    types_help = ", ".join(p.cli for p in FORMAT.made_by("quantize"))
    ap = argparse.ArgumentParser(prog="python quantize/run.py --format gguf", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", required=True, help=f"comma-separated: {types_help}")
    ap.add_argument("--export", required=True, type=Path, help="export folder (or one source variant folder)")
    ap.add_argument("--mmproj", default="f16", choices=["f16", "q8_0"], help="vision projector precision (default f16)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--imatrix", help="importance matrix: 'auto' computes one from the calibration conversations "
                    "(image + text forward passes in PyTorch), or a llama.cpp imatrix file (.gguf or legacy .dat)")
    add_calibration_args(ap, "--imatrix auto: ALLaVA-4V JSON (default: the built-in world's ALLaVA-Instruct-World.json)",
                         "calibration conversations")
    a = ap.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("error: llama-cpp-python is not installed; run scripts/build_llama_cpp.sh", file=sys.stderr)
        return 2
    types = [t.strip().lower() for t in a.types.split(",") if t.strip()]

    def run() -> None:
        src = find_source(a.export)
        man = Manifest.read(src)
        print(f"source {src} ({man.precision}, LM {human_size(man.sizes['model'])})")
        for t in types:  # refuse a type llama.cpp cannot make before computing or writing anything
            try:
                if FORMAT.precision(t).needs_imatrix and not a.imatrix:
                    quantize_gguf(a.export, t)  # raises its one line
            except KeyError as exc:
                raise QuantizeError(str(exc)) from exc
        imatrix, record = resolve_imatrix(a, src, man)
        for t in types:
            quantize_gguf(a.export, t, a.threads, a.mmproj, imatrix, record)

    return exit_code(run, QuantizeError, ManifestError, CalibrationError)


def resolve_imatrix(a: argparse.Namespace, src: Path, man: Manifest) -> tuple[Path | None, dict | None]:
    """The imatrix file --imatrix asks for and its manifest record: computed beside the variants for
    'auto', checked (llama.cpp's GGUF imatrix or legacy .dat) for a file, None without --imatrix."""
    if not a.imatrix:
        return None, None
    if a.imatrix != "auto":
        path = Path(a.imatrix)
        if not path.is_file():
            raise QuantizeError(f"{path}: imatrix file not found (expected a llama.cpp imatrix .gguf/.dat, or 'auto')")
        return path.resolve(), {"kind": "file", "file": str(path.resolve()), "sha256": sha256(path)}
    spec = spec_from_args(a)
    checkpoint = Path(man.source.get("checkpoint", ""))
    if not (checkpoint / "config.json").is_file():
        raise QuantizeError(f"{src}: its manifest's source checkpoint {checkpoint} is not a model folder "
                            "(--imatrix auto runs it; give --imatrix FILE instead)")
    path, record = make_imatrix(checkpoint, spec, src.parent)
    record["entries"] = len(read_imatrix(path)["entries"])
    return path, record


if __name__ == "__main__":
    sys.exit(main())
