"""Quantize exports. GGUF: llama.cpp's own quantizer (llama_cpp.llama_model_quantize).

  python quantize/run.py --format gguf --types q8_0,q5_k_m,q4_k_m,q4_0 --export exports/tiny/gguf

--export is an export folder made by export/to_gguf.py (its F32/ or F16/ variant is the source,
F32 preferred) or one variant folder. Each type becomes a sibling variant folder
(e.g. exports/tiny/gguf/Q4_K_M/) with the quantized language model, the vision projector (F16 by
default: hard-linked from the source; --mmproj q8_0 re-exports it from the source checkpoint) and a
manifest. K-quants need row sizes divisible by 256; llama.cpp falls back to another type per tensor
otherwise (it says so in its log). Files are written to a temporary name, read back, then renamed.
"""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # repo root, so `import export.x` works

import argparse  # noqa: E402
import ctypes  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from allava.fileio import atomic_path  # noqa: E402
from allava.variant import human_size, read_manifest, write_manifest  # noqa: E402
from export.checkpoint import ExportError  # noqa: E402

GGUF_TYPES = {"q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q5_k_s": "Q5_K_S", "q5_0": "Q5_0",
              "q5_1": "Q5_1", "q4_k_m": "Q4_K_M", "q4_k_s": "Q4_K_S", "q4_0": "Q4_0", "q4_1": "Q4_1",
              "q3_k_m": "Q3_K_M", "q2_k": "Q2_K"}
SOURCE_ORDER = ["F32", "F16", "BF16"]


def find_source(export: Path) -> Path:
    """The highest-precision GGUF variant under `export` (or `export` itself when it is a variant)."""
    if (export / "manifest.json").is_file():
        return export
    for prec in SOURCE_ORDER:
        if (export / prec / "manifest.json").is_file():
            return export / prec
    raise ExportError(f"{export}: no F32/F16/BF16 GGUF variant found (run export/to_gguf.py first)")


def _link_or_copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def quantize_gguf(export: str | Path, qtype: str, threads: int | None = None, mmproj: str = "f16") -> Path:
    """Make one quantized variant next to the source variant; returns its folder."""
    import llama_cpp as L

    from export.gguf_writer import read_gguf
    from runtimes.llamacpp_runtime import install_logger

    install_logger()  # llama.cpp's quantize log goes to a buffer (ALLAVA_LLAMA_VERBOSE=1 shows it)

    if qtype not in GGUF_TYPES:
        raise ExportError(f"unknown GGUF type {qtype!r}; choose from {', '.join(GGUF_TYPES)}")
    src = find_source(Path(export))
    man = read_manifest(src)
    if man.get("format") != "gguf":
        raise ExportError(f"{src}: manifest format is {man.get('format')!r}, not gguf")
    prec = GGUF_TYPES[qtype]
    vdir = src.parent / prec
    name = man["name"]
    lm_out = vdir / f"{name}-{prec}.gguf"
    t0 = time.time()
    created = not vdir.exists()
    written: list[Path] = []
    try:
        with atomic_path(lm_out) as tmp:
            params = L.llama_model_quantize_default_params()
            params.ftype = getattr(L, f"LLAMA_FTYPE_MOSTLY_{prec}")
            params.nthread = threads or os.cpu_count() or 1
            rc = L.llama_model_quantize(str(src / man["files"]["model"]).encode(), str(tmp).encode(),
                                        ctypes.byref(params))
            if rc != 0:
                raise ExportError(f"llama_model_quantize({prec}) failed with code {rc}")
            r = read_gguf(tmp)
            arch = r.fields["general.architecture"].contents()
            if arch != "phi2":
                raise ExportError(f"{tmp}: quantized file has architecture {arch!r}")
        written.append(lm_out)
        lm_out.chmod(0o644)
        mm_prec = mmproj.upper()
        donor = next((d for d in [src, *sorted(src.parent.iterdir())] if (d / "manifest.json").is_file()
                      and read_manifest(d).get("format") == "gguf"
                      and read_manifest(d).get("mmproj_precision") == mm_prec), None)
        if donor is not None:  # an existing projector of the wanted precision: share it (hard link)
            dm = read_manifest(donor)
            mm_out = vdir / dm["files"]["mmproj"]
            if donor.resolve() != vdir.resolve():
                _link_or_copy(donor / dm["files"]["mmproj"], mm_out)
        else:  # none yet: write it from the source checkpoint
            from export.checkpoint import open_checkpoint
            from export.gguf_writer import REQUIRED_MMPROJ_KEYS, _write, plan_mmproj, validate

            ck = open_checkpoint(man["source"]["checkpoint"])
            mm_out = vdir / f"mmproj-{name}-{mm_prec}.gguf"
            with atomic_path(mm_out) as tmp:
                kv, plan = plan_mmproj(ck, mm_prec)
                _write(tmp, "clip", kv, plan, "mmproj")
                validate(tmp, "clip", REQUIRED_MMPROJ_KEYS, plan)
        written.append(mm_out)
        mm_out.chmod(0o644)
        sizes = {"model": lm_out.stat().st_size, "mmproj": mm_out.stat().st_size}
        sizes["total"] = sizes["model"] + sizes["mmproj"]
        write_manifest(vdir, {
            "format": "gguf", "precision": prec, "mmproj_precision": mm_prec, "name": name,
            "files": {"model": lm_out.name, "mmproj": mm_out.name}, "sizes": sizes,
            "source": man["source"], "quantized_from": {"variant": src.name, "precision": man["precision"]},
            "created_by": "quantize/run.py (llama_model_quantize)", "runtime": "llama.cpp", "parity": None,
        })
        for stale in vdir.glob("*.gguf"):  # a re-run with another --mmproj leaves no orphan files
            if stale not in (lm_out, mm_out):
                stale.unlink()
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        if created and vdir.exists() and not any(vdir.iterdir()):
            vdir.rmdir()
        raise
    print(f"  {prec:<8} {human_size(sizes['model']):>12} LM  {human_size(sizes['mmproj']):>12} mmproj "
          f"({time.time() - t0:.1f} s)  -> {vdir}", flush=True)
    return vdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", required=True, choices=["gguf"], help="export format (ONNX/GPTQ/CoreML plug in here)")
    ap.add_argument("--types", required=True, help=f"comma-separated; gguf: {', '.join(GGUF_TYPES)}")
    ap.add_argument("--export", required=True, type=Path, help="export folder (or one source variant folder)")
    ap.add_argument("--mmproj", default="f16", choices=["f16", "q8_0"], help="vision projector precision (default f16)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("error: llama-cpp-python is not installed; run scripts/build_llama_cpp.sh", file=sys.stderr)
        return 2
    types = [t.strip().lower() for t in a.types.split(",") if t.strip()]
    try:
        src = find_source(a.export)
        man = read_manifest(src)
        print(f"source {src} ({man['precision']}, LM {human_size(man['sizes']['model'])})")
        for t in types:
            quantize_gguf(a.export, t, a.threads, a.mmproj)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
