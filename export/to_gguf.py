"""Export a LLaVA-Phi Hugging Face checkpoint to GGUF: language model (phi2) + vision projector (clip mmproj).

Writes OUTDIR/<PRECISION>/{<name>-<PRECISION>.gguf, mmproj-<name>-<MMPROJ_PRECISION>.gguf, manifest.json}.
Each file is written to a temporary name, read back with gguf.GGUFReader (keys, tensor names,
shapes, types) and only then renamed into place; on any error nothing of this variant is left.

Run the result with llama.cpp (needs the CLS-order patch, see export/README.md):
  llama-mtmd-cli -m OUTDIR/F16/<name>-F16.gguf --mmproj OUTDIR/F16/mmproj-<name>-F16.gguf --image IMG -p "..."
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from allava.checkpoint import CheckpointError, open_checkpoint
from allava.cli import exit_code
from allava.fileio import atomic_path, ensure_space
from allava.variant import Manifest, human_size, writing_variant
from export.errors import ExportError
from export.gguf_writer import (
    MMPROJ_OUTTYPES,
    OUTTYPES,
    REQUIRED_MMPROJ_KEYS,
    plan_lm,
    plan_mmproj,
    planned_bytes,
    validate,
    write_file,
    write_gguf_pair,
)


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
        mm_precision = MMPROJ_OUTTYPES[mmproj_outtype]
    name = name or ck.path.resolve().name
    vdir = Path(outdir) / precision
    lm_final = vdir / f"{name}-{precision}.gguf"
    mm_final = vdir / f"mmproj-{name}-{mm_precision}.gguf"
    needed = planned_bytes(plan_lm(ck, precision)[1]) + planned_bytes(plan_mmproj(ck, mm_precision)[1])
    with writing_variant(vdir, needed) as written:
        ensure_space(vdir, needed)  # the plan is exact: refuse before writing, not after 1 GB
        with atomic_path(lm_final) as lm_tmp, atomic_path(mm_final) as mm_tmp:
            info = write_gguf_pair(ck, lm_tmp, mm_tmp, precision, mm_precision)
            # both validated: rename LM now, mmproj on leaving the outer context
        written += [lm_final, mm_final]
        for p in written:
            p.chmod(0o644)  # mkstemp creates 0600; exports are meant to be shared
        manifest = Manifest.for_files(
            vdir, {"model": lm_final, "mmproj": mm_final}, format="gguf", precision=precision, name=name,
            source={"checkpoint": str(ck.path.resolve()), "sha256": ck.fingerprint()},
            created_by="export/to_gguf.py", runtime="llama.cpp", mmproj_precision=mm_precision,
            tensors={"model": info["model"]["tensors"], "mmproj": info["mmproj"]["tensors"]})
        manifest.write(vdir)
    print(f"wrote {vdir} in {time.time() - t0:.1f} s")
    print(f"  {lm_final.name:<40} {human_size(manifest.sizes['model']):>12}")
    print(f"  {mm_final.name:<40} {human_size(manifest.sizes['mmproj']):>12}")
    return vdir


def export_mmproj(checkpoint: str | Path, out_file: str | Path, outtype: str = "f16") -> Path:
    """Only the vision projector file (e.g. a Q8_0 mmproj for a quantized variant); no manifest,
    since one file is not a variant. Written to a temporary name, validated, then renamed."""
    if outtype not in MMPROJ_OUTTYPES:
        raise ExportError(f"unsupported mmproj type {outtype!r}; choose from {', '.join(MMPROJ_OUTTYPES)}")
    ck = open_checkpoint(checkpoint)
    kv, plan = plan_mmproj(ck, MMPROJ_OUTTYPES[outtype])
    with atomic_path(out_file, planned_bytes(plan)) as tmp:
        write_file(tmp, "clip", kv, plan, "mmproj")
        validate(tmp, "clip", REQUIRED_MMPROJ_KEYS, plan)
    Path(out_file).chmod(0o644)
    return Path(out_file)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python export/to_gguf.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="Hugging Face LLaVA-Phi folder (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--outdir", help="export folder; the variant goes to OUTDIR/<PRECISION>/ (required unless --mmproj-only)")
    ap.add_argument("--outtype", default="f16", choices=list(OUTTYPES),
                    help="language-model precision (default f16). Lower bits: quantize/run.py --format gguf")
    ap.add_argument("--mmproj-outtype", default=None, choices=list(MMPROJ_OUTTYPES),
                    help="vision projector precision (default: f32 for --outtype f32, else f16)")
    ap.add_argument("--name", default=None, help="model name in file names (default: checkpoint folder name)")
    ap.add_argument("--mmproj-only", metavar="FILE", default=None,
                    help="write only the vision projector to FILE (at --mmproj-outtype, default f16) and no variant")
    a = ap.parse_args(argv)
    if not a.outdir and not a.mmproj_only:
        ap.error("--outdir is required")
    if a.mmproj_only:
        return exit_code(lambda: export_mmproj(a.checkpoint, a.mmproj_only, a.mmproj_outtype or "f16"), ExportError, CheckpointError)
    return exit_code(lambda: export_gguf(a.checkpoint, a.outdir, a.outtype, a.name, a.mmproj_outtype), ExportError, CheckpointError)


if __name__ == "__main__":
    sys.exit(main())
