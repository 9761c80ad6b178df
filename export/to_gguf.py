"""Export a LLaVA-Phi Hugging Face checkpoint to GGUF: language model (phi2) + vision projector (clip mmproj).

Writes OUTDIR/<PRECISION>/{<name>-<PRECISION>.gguf, mmproj-<name>-<MMPROJ_PRECISION>.gguf, manifest.json}.
Each file is written to a temporary name, read back with gguf.GGUFReader (keys, tensor names,
shapes, types) and only then renamed into place; on any error nothing of this variant is left.

Run the result with llama.cpp (needs the CLS-order patch, see export/README.md):
  llama-mtmd-cli -m OUTDIR/F16/<name>-F16.gguf --mmproj OUTDIR/F16/mmproj-<name>-F16.gguf --image IMG -p "..."
"""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # repo root, so `import export.x` works

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from allava.fileio import atomic_path  # noqa: E402
from allava.variant import human_size, write_manifest  # noqa: E402
from export.checkpoint import ExportError, open_checkpoint  # noqa: E402
from export.gguf_writer import OUTTYPES, write_gguf_pair  # noqa: E402


def export_gguf(checkpoint: str | Path, outdir: str | Path, outtype: str = "f16", name: str | None = None,
                mmproj_outtype: str | None = None) -> Path:
    """Export one GGUF variant; returns the variant folder. Raises ExportError with a clear reason."""
    if outtype not in OUTTYPES:
        raise ExportError(f"unsupported --outtype {outtype!r}; choose from {', '.join(OUTTYPES)}")
    t0 = time.time()
    ck = open_checkpoint(checkpoint)
    precision = OUTTYPES[outtype]
    mm_precision = "F32" if precision == "F32" else "F16"
    if mmproj_outtype:
        mm_precision = OUTTYPES[mmproj_outtype]
    name = name or ck.path.resolve().name
    vdir = Path(outdir) / precision
    lm_final = vdir / f"{name}-{precision}.gguf"
    mm_final = vdir / f"mmproj-{name}-{mm_precision}.gguf"
    created_dir = not vdir.exists()
    done: list[Path] = []
    try:
        with atomic_path(lm_final) as lm_tmp, atomic_path(mm_final) as mm_tmp:
            info = write_gguf_pair(ck, lm_tmp, mm_tmp, precision, mm_precision)
            # both validated: rename LM now, mmproj on leaving the outer context
        done = [lm_final, mm_final]
        for p in done:
            p.chmod(0o644)  # mkstemp creates 0600; exports are meant to be shared
        manifest: dict[str, Any] = {
            "format": "gguf",
            "precision": precision,
            "mmproj_precision": mm_precision,
            "name": name,
            "files": {"model": lm_final.name, "mmproj": mm_final.name},
            "sizes": {"model": lm_final.stat().st_size, "mmproj": mm_final.stat().st_size},
            "tensors": {"model": info["model"]["tensors"], "mmproj": info["mmproj"]["tensors"]},
            "source": {"checkpoint": str(ck.path.resolve()), "sha256": ck.fingerprint()},
            "created_by": "export/to_gguf.py",
            "runtime": "llama.cpp",
            "parity": None,
        }
        manifest["sizes"]["total"] = manifest["sizes"]["model"] + manifest["sizes"]["mmproj"]
        write_manifest(vdir, manifest)
    except BaseException:
        for p in done:
            p.unlink(missing_ok=True)
        if created_dir and vdir.exists() and not any(vdir.iterdir()):
            vdir.rmdir()
        raise
    print(f"wrote {vdir} in {time.time() - t0:.1f} s")
    print(f"  {lm_final.name:<40} {human_size(manifest['sizes']['model']):>12}")
    print(f"  {mm_final.name:<40} {human_size(manifest['sizes']['mmproj']):>12}")
    return vdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="Hugging Face LLaVA-Phi folder (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--outdir", required=True, help="export folder; the variant goes to OUTDIR/<PRECISION>/")
    ap.add_argument("--outtype", default="f16", choices=list(OUTTYPES),
                    help="language-model precision (default f16). Lower bits: quantize/run.py --format gguf")
    ap.add_argument("--mmproj-outtype", default=None, choices=["f32", "f16", "q8_0"],
                    help="vision projector precision (default: f32 for --outtype f32, else f16)")
    ap.add_argument("--name", default=None, help="model name in file names (default: checkpoint folder name)")
    a = ap.parse_args(argv)
    try:
        export_gguf(a.checkpoint, a.outdir, a.outtype, a.name, a.mmproj_outtype)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
