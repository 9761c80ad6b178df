"""Benchmark: GPTQ at the ALLaVA-3B shape: quantization time and peak memory, size, then latency.

  python bench/experiments/gptq_allava3b.py [--n-samples 8] [--bits 4] [--device laptop] [--skip-latency]

Quantizes the random-weight ALLaVA-3B checkpoint (outputs/bench-allava3b/hf, built when missing,
bf16) with the project's command (quantize/gptq_quantizer.py: GPTQModel on the CPU, every one of
Phi-2's 32 layers, calibration samples with images from the built-in world) into the folder the
full-size bench reads (outputs/bench-allava3b/gptq/W4G128), and prints the wall time, the
quantizer's peak RSS and the sizes. Then, unless --skip-latency, it runs bench/experiments/engines_allava3b.py,
whose one-run table puts GPTQ beside ONNX Runtime and llama.cpp. Random weights make calibration
quality moot, so a few samples suffice (--n-samples; the time grows with it: the forward passes
that collect each layer's inputs run once per sample). Not a test: figures belong to the host.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = Path("outputs/bench-allava3b")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-samples", type=int, default=8, help="calibration samples (default 8)")
    ap.add_argument("--bits", type=int, default=4, choices=(4, 8))
    ap.add_argument("--device", default="laptop", help="device profile for the latency run (default laptop)")
    ap.add_argument("--skip-latency", action="store_true", help="quantize and report, no latency run")
    ap.add_argument("--force", action="store_true", help="re-quantize even if the variant exists")
    a = ap.parse_args()
    ckpt = WORK / "hf"
    if not (ckpt / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "train.init_checkpoint", "--preset", "allava-3b", "--output-dir", str(ckpt),
                        "--dtype", "bf16"], cwd=REPO, check=True)
    name = f"W{a.bits}G128"
    out = WORK / "gptq" / name
    if a.force or not (out / "manifest.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "quantize.gptq_quantizer", str(ckpt), "--outdir", str(out),
                        "--bits", str(a.bits), "--group-size", "128", "--n-samples", str(a.n_samples)],
                       cwd=REPO, check=True)
        wall = time.perf_counter() - t0
    else:
        wall = None
    man = json.loads((out / "manifest.json").read_text())
    print(f"\nGPTQ {name} of ALLaVA-3B (random weights), {man['calibration']['n_samples']} "
          f"{man['calibration']['kind']} calibration samples, device {man['device']}, gptqmodel "
          f"{man['created_by'].split('gptqmodel ')[-1].rstrip(')')}")
    print(f"  quantize (GPTQ only): {man['quantize_s']:.0f} s" + (f"; whole command {wall:.0f} s" if wall else " (existing variant)"))
    print(f"  peak RSS of the quantizer: {man['peak_rss_mb']:,} MiB")
    print(f"  folder {man['sizes']['total'] / 2**30:.2f} GiB, language model {man['lm_bytes'] / 2**30:.2f} GiB "
          f"(vision tower, projector, embeddings and lm_head stay float16)")
    if a.skip_latency:
        return 0
    return subprocess.run([sys.executable, "bench/experiments/engines_allava3b.py", "--device", a.device], cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main())
