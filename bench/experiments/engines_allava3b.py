"""Benchmark: ONNX Runtime, llama.cpp and GPTQ at the ALLaVA-3B shape, on this host, in one run.

  python bench/experiments/engines_allava3b.py [--device laptop] [--output-dir outputs/bench/engines-allava-3b]

Runs the bench harness (bench/run.py) on the random-weight ALLaVA-3B checkpoint with latency only,
for ONNX Runtime int8 and q4, llama.cpp Q8_0, Q4_K_M and Q4_0 (each also with a Q8_0 projector,
-VQ8_0) and, with --with-gptq, GPTQ W4G128 (transformers + GPTQModel's CPU kernel), each in its own
process with the
same threads, image and prompt, and prints one table: TTFT, image encode, prefill and decode tok/s,
peak RSS and size, the ggml CPU variant llama.cpp loaded, then upstream llama-bench's pp/tg on the same
GGUF files (flash attention off and on). It builds whatever is missing (the checkpoint, GGUF F16 and ONNX fp32 as the
quantizers' sources, the quantized variants): about 15 minutes from nothing on 2 cores, mostly
exports, plus ~30 minutes for GPTQ (bench/experiments/gptq_allava3b.py builds it alone and prints its cost). The laptop profile (12 GiB) admits every one of these variants; the full report, plot and
JSON land in --output-dir. Not a test: the figures belong to the host (its CPU features are printed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

VARIANTS = ["onnx:INT8", "onnx:Q4", "gguf:Q8_0", "gguf:Q4_K_M", "gguf:Q4_0", "gguf:Q4_K_M-VQ8_0", "gguf:Q4_0-VQ8_0"]
LLAMA_BENCH_VARIANTS = ["Q4_K_M", "Q4_0"]
LLAMA_BENCH = Path(__file__).resolve().parents[2] / ".cache/llama-cpp-tools/bin/llama-bench"


def llama_bench(exports: Path, threads: int, n_prompt: int, n_gen: int, ubatch: int) -> None:
    """Upstream llama-bench on the same GGUF files (same build, same threads): llama.cpp's own pp/tg figures
    for the language model alone, flash attention off and on, so the harness's numbers can be checked
    against the tool llama.cpp users quote."""
    if not LLAMA_BENCH.is_file():
        print(f"\nllama-bench: {LLAMA_BENCH} not built (scripts/build_llama_cpp.sh)")
        return
    for name in LLAMA_BENCH_VARIANTS:
        models = sorted(p for p in (exports / "gguf" / name).glob("*.gguf") if not p.name.startswith("mmproj-"))
        if not models:
            continue
        cmd = [str(LLAMA_BENCH), "-m", str(models[0]), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
               "-ub", str(ubatch), "-b", str(ubatch), "-fa", "0,1", "-r", "2", "-o", "md"]
        print(f"\nllama-bench {name}: " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="laptop", help="device profile (default laptop: 12 GiB admits all six)")
    ap.add_argument("--output-dir", type=Path, default=Path("outputs/bench/engines-allava-3b"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-tokens", type=int, default=32)
    ap.add_argument("--with-gptq", action="store_true", help="add gptq:W4G128 (~35 min to build at full size)")
    ap.add_argument("--no-llama-bench", action="store_true", help="skip upstream llama-bench's pp/tg figures")
    a = ap.parse_args()
    variants = VARIANTS + (["gptq:W4G128"] if a.with_gptq else [])
    cmd = [sys.executable, "bench/run.py", "--model", "allava-3b", "--random-init", "--benchmarks", "none",
           "--device", a.device, "--variants", ",".join(variants), "--output-dir", str(a.output_dir),
           "--repeats", str(a.repeats), "--latency-tokens", str(a.latency_tokens)]
    rc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2]).returncode
    results = a.output_dir / "results.json"
    if rc != 0 or not results.is_file():
        print(f"error: the bench run failed (exit {rc})", file=sys.stderr)
        return rc or 1
    res = json.loads(results.read_text())
    by = {v["name"]: v for v in res["variants"]}
    host = res["host"]
    print(f"\nALLaVA-3B shape (random weights), {res['device']['host_threads']} threads, {host['cpu']} "
          f"({', '.join(host.get('cpu_flags') or [])}), {res['config']['repeats']} runs of "
          f"{res['config']['latency_tokens']} tokens, medians")
    print(f"{'variant':<14} {'size GiB':>9} {'image ms':>9} {'TTFT s':>8} {'prefill tok/s':>14} {'decode tok/s':>13} "
          f"{'peak RSS GiB':>13}")
    for name in variants:
        v = by.get(name)
        if v is None or v.get("status") != "ok":
            why = (v or {}).get("reason") or next((s["reason"] for s in res["skipped"] if s["variant"] == name), "not built")
            print(f"{name:<14} {why[:90]}")
            continue
        lat = v["latency"]
        print(f"{name:<14} {v['size_bytes'] / 2**30:>9.2f} {lat['image_encode_ms']['median']:>9.0f} "
              f"{lat['ttft_ms']['median'] / 1e3:>8.1f} {lat['prefill_tok_s']['median']:>14.1f} "
              f"{lat['decode_tok_s']['median']:>13.2f} {v['peak_rss_mb'] / 1024:>13.2f}")
    cpu = next((v["runtime_build"].get("cpu_variant") for v in res["variants"] if (v.get("runtime_build") or {}).get(
        "cpu_variant")), None)
    settings = next((v["engine_settings"] for v in res["variants"] if v["format"] == "gguf" and v.get("engine_settings")),
                    None)
    print(f"llama.cpp CPU variant: {cpu}; engine settings: {settings}")
    if not a.no_llama_bench:
        image_tokens = 576  # one 336 px image: the prefill the harness's TTFT is mostly made of
        llama_bench(Path(res["config"].get("exports") or "outputs/bench-allava3b"), res["device"]["host_threads"],
                    image_tokens, a.latency_tokens, (settings or {}).get("n_ubatch", 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
