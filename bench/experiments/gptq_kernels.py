"""Benchmark: which GPTQ kernel is fastest *and correct* on this CPU, against dense PyTorch.

  python bench/experiments/gptq_kernels.py [--layers 8] [--threads N] [--output-dir outputs/bench/gptq-kernels]

Builds a random-weight model with ALLaVA-3B's widths (Phi-2: 2560 wide, MLP 10240, vocabulary
51,200; CLIP-L at 336 px, so 576 image tokens) but only --layers decoder layers (the kernels'
share of a decode step grows with depth; the dense lm_head is the rest), quantizes it with the
project's command (quantize/gptq_quantizer.py, 4 and 8 bits, a small built-in world for
calibration), then runs each GPTQModel CPU kernel in its own process with the same image prompt:
TTFT, prefill and decode tokens/s, peak RSS, and the first-token logits' distance from the
dequantize-every-call reference kernel (``gptq_torch``) with greedy-token agreement. Dense bf16 and
fp32 runs of the unquantized model give the baseline. Not a test: the figures belong to the host
(its CPU flags are printed). runtimes/gptq_runtime.py's kernel order comes from this table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
KERNELS = ["gptq_torch_aten", "gptq_torch_int8", "gptq_torch_fused", "gptq_torch"]
REFERENCE_KERNEL = "gptq_torch"


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16") if f in flags]


def prepare(work: Path, layers: int, n_samples: int) -> tuple[Path, dict[int, Path]]:
    """The random checkpoint, a small world to calibrate on and the 4- and 8-bit variants (reused)."""
    import torch

    from allava.modeling import PRESET_DIR, save_random_checkpoint
    from allava.world.build import WorldSpec, build_world

    work.mkdir(parents=True, exist_ok=True)
    preset = json.loads((PRESET_DIR / "allava-3b.json").read_text())
    preset["name"] = f"allava-3b-{layers}layers"
    preset["text"]["num_hidden_layers"] = layers
    preset["vision"]["num_hidden_layers"] = 2  # the vision tower is dense in every variant
    preset.pop("pretrained", None)
    preset_path = work / f"{preset['name']}.json"
    preset_path.write_text(json.dumps(preset, indent=1))
    ckpt = work / "hf"
    if not (ckpt / "config.json").is_file():
        save_random_checkpoint(ckpt, str(preset_path), dtype=torch.bfloat16)
    world = work / "world"
    if not (world / "ALLaVA-Instruct-World.json").is_file():
        build_world(world, WorldSpec(train_scenes=max(16, n_samples), heldout_scenes=4, text_records=8), progress=False)
    variants = {}
    for bits in (4, 8):
        out = work / f"W{bits}G128"
        if not (out / "manifest.json").is_file():
            subprocess.run([sys.executable, "-m", "quantize.gptq_quantizer", str(ckpt), "--outdir", str(out),
                            "--bits", str(bits), "--calibration", str(world / "ALLaVA-Instruct-World.json"),
                            "--n-samples", str(n_samples)], cwd=REPO, check=True)
        variants[bits] = out
    return ckpt, variants


def worker(kind: str, path: str, threads: int, tokens: int, repeats: int, out: str) -> None:
    """One configuration in this process: 'dense:<dtype>' or a GPTQ kernel name."""
    from PIL import Image

    from allava.chat import prompt_text
    from runtimes.base import peak_rss_mb

    if kind.startswith("dense:"):
        from runtimes.torch_runtime import TorchRuntime

        rt = TorchRuntime().load(path, threads, dtype=kind.split(":")[1])
        loaded = kind
    else:
        os.environ["ALLAVA_GPTQ_KERNEL"] = kind
        from runtimes.gptq_runtime import GptqRuntime

        rt = GptqRuntime().load(path, threads)
        loaded = rt.kernel_class()
    image = Image.new("RGB", (336, 336), (200, 80, 40))
    prompt = prompt_text("Describe the image in detail.")
    rt.generate(image, prompt, max_new_tokens=4, ignore_eos=True)  # warm-up (kernel compile, allocator)
    runs = [rt.generate(image, prompt, max_new_tokens=tokens, ignore_eos=True) for _ in range(repeats)]
    logits = rt.first_token_logits(image, prompt)
    np.save(out + ".npy", logits.astype(np.float32))
    med = {k: statistics.median(getattr(r.timings, k) for r in runs)
           for k in ("ttft_ms", "prefill_tok_s", "decode_tok_s", "image_encode_ms")}
    Path(out + ".json").write_text(json.dumps({"kind": kind, "class": loaded, "dtype": str(rt.dtype),
                                               "tokens": runs[0].token_ids, "peak_rss_mb": peak_rss_mb(), **med}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8, help="decoder layers of the Phi-2-width model (default 8)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads (default: all)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens generated per run (default 32)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-samples", type=int, default=8, help="calibration samples (default 8: speed, not accuracy)")
    ap.add_argument("--kernels", default=",".join(KERNELS))
    ap.add_argument("--output-dir", type=Path, default=Path("outputs/bench/gptq-kernels"))
    ap.add_argument("--worker", nargs=3, metavar=("KIND", "PATH", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], a.worker[1], a.threads, a.tokens, a.repeats, a.worker[2])
        return 0
    ckpt, variants = prepare(a.output_dir, a.layers, a.n_samples)
    runs = [("dense:float32", ckpt, 0), ("dense:bfloat16", ckpt, 0)]
    runs += [(k, variants[b], b) for b in (4, 8) for k in a.kernels.split(",")]
    rows = []
    for kind, path, bits in runs:
        tag = f"{kind.replace(':', '-')}-w{bits}"
        out = a.output_dir / "runs" / tag
        out.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(path), str(out),
                            "--threads", str(a.threads), "--tokens", str(a.tokens), "--repeats", str(a.repeats)],
                           cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            rows.append({"kind": kind, "bits": bits, "error": (r.stderr.strip().splitlines() or ["?"])[-1][:120]})
            continue
        row = json.loads(Path(str(out) + ".json").read_text())
        row.update(bits=bits, logits=str(out) + ".npy")
        rows.append(row)
    for bits in (4, 8):  # distance from the dequantize-every-call kernel of the same weights
        ref = next((r for r in rows if r.get("bits") == bits and r["kind"] == REFERENCE_KERNEL and "error" not in r), None)
        for r in rows:
            if r.get("bits") == bits and ref is not None and "error" not in r:
                d = np.load(r["logits"]) - np.load(ref["logits"])
                r["max_abs_logit_diff"] = float(np.abs(d).max())
                r["same_tokens"] = r["tokens"] == ref["tokens"]
    print(f"\nGPTQ kernels, Phi-2 widths x {a.layers} layers (random weights), {a.threads} threads, "
          f"{a.repeats} runs of {a.tokens} tokens (medians); CPU flags: {', '.join(cpu_flags())}")
    print(f"{'config':<26} {'bits':>4} {'class':<22} {'TTFT s':>7} {'prefill t/s':>11} {'decode t/s':>10} "
          f"{'RSS GiB':>8} {'vs ref: max|dlogit|':>20} {'tokens':>7}")
    for r in rows:
        if "error" in r:
            print(f"{r['kind']:<26} {r['bits']:>4} failed: {r['error']}")
            continue
        diff = f"{r['max_abs_logit_diff']:.3g}" if "max_abs_logit_diff" in r else "-"
        same = ("same" if r["same_tokens"] else "differ") if "same_tokens" in r else "-"
        print(f"{r['kind']:<26} {r['bits'] or '-':>4} {r['class'][:22]:<22} {r['ttft_ms'] / 1e3:>7.2f} "
              f"{r['prefill_tok_s']:>11.1f} {r['decode_tok_s']:>10.2f} {r['peak_rss_mb'] / 1024:>8.2f} {diff:>20} {same:>7}")
    (a.output_dir / "results.json").write_text(json.dumps({"cpu_flags": cpu_flags(), "layers": a.layers,
                                                            "threads": a.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
