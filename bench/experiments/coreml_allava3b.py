"""Benchmark: CoreML conversion at the ALLaVA-3B shape: time, peak memory and package sizes per precision.

  python bench/experiments/coreml_allava3b.py [--precisions fp16,int8,int4] [--chunk-layers 8] [--force]

Converts the random-weight ALLaVA-3B checkpoint (outputs/bench-allava3b/hf, built when missing,
bf16) with the project's command (export/to_coreml.py: CLIP ViT-L/14-336 + projector, the token
embedding, and Phi-2's 32 layers as stateful language-model packages in chunks of --chunk-layers)
into outputs/bench-allava3b/coreml/<PRECISION>, then compresses that FP16 export into each lower
precision (--source: the programs are the same, only the weights change). Each command runs in its
own process; the table gives its wall time, its peak RSS (VmHWM, printed by the command itself) and
the package sizes. palette4 is not in the default list: its per-group k-means (16 output channels
per lookup table) runs ~50,000 clusterings at this size; the table prints the measured time when
asked for. Latency needs macOS: nothing here times a prediction. Not a test: figures belong to the host.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = Path("outputs/bench-allava3b")
PEAK = re.compile(r"^peak RSS ([0-9.]+) GiB$", re.M)


def _run(cmd: list[str]) -> tuple[float, float | None]:
    """(wall seconds, the command's own peak RSS in GiB), echoing its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if "torchao" not in line and "_pytree" not in line:
            print("   ", line, end="", flush=True)
        lines.append(line)
    if proc.wait() != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    m = PEAK.findall("".join(lines))
    return time.perf_counter() - t0, float(m[-1]) if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precisions", default="fp16,int8,int4", help="comma-separated (default fp16,int8,int4; "
                    "palette4 too if you have the hours)")
    ap.add_argument("--chunk-layers", type=int, default=8, help="decoder layers per language-model package (default 8)")
    ap.add_argument("--max-context", type=int, default=2048)
    ap.add_argument("--force", action="store_true", help="re-convert even if a variant exists")
    a = ap.parse_args()
    ckpt = WORK / "hf"
    if not (ckpt / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "train.init_checkpoint", "--preset", "allava-3b", "--output-dir", str(ckpt),
                        "--dtype", "bf16"], cwd=REPO, check=True)
    precisions = [p.strip().upper() for p in a.precisions.split(",") if p.strip()]
    if "FP16" not in precisions:
        precisions.insert(0, "FP16")
    rows = []
    fp16 = WORK / "coreml" / "FP16"
    for prec in precisions:
        out = WORK / "coreml" / prec
        cmd = [sys.executable, "-m", "export.to_coreml", str(ckpt), "--outdir", str(out), "--precision", prec.lower(),
               "--chunk-layers", str(a.chunk_layers), "--max-context", str(a.max_context)]
        if prec != "FP16":
            cmd += ["--source", str(fp16)]
        if a.force or not (out / "manifest.json").is_file():
            print(f"==> {' '.join(cmd[1:])}", flush=True)
            wall, peak = _run(cmd)
        else:
            wall, peak = None, None
        man = json.loads((out / "manifest.json").read_text())
        rows.append((prec, wall, peak, man))
    print("\nCoreML export of ALLaVA-3B (random weights, bf16 checkpoint), "
          f"language model in chunks of {a.chunk_layers} layers, context {a.max_context}")
    print(f"{'precision':<10}{'command s':>11}{'peak RSS GiB':>14}{'vision MiB':>12}{'embed MiB':>11}"
          f"{'LM MiB':>10}{'total GiB':>11}  LM packages")
    for prec, wall, peak, man in rows:
        s = man["sizes"]
        lm = [r for r in man["files"] if r.startswith("model")]
        how = "converted" if prec == "FP16" else "compressed from FP16"
        print(f"{prec:<10}{(f'{wall:.0f}' if wall else 'existing'):>11}{(f'{peak:.2f}' if peak else '-'):>14}"
              f"{s['vision'] / 2**20:>12.0f}{s['embed_tokens'] / 2**20:>11.0f}{sum(s[r] for r in lm) / 2**20:>10.0f}"
              f"{s['total'] / 2**30:>11.2f}  {len(lm)} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
