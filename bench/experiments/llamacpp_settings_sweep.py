"""Benchmark: llama.cpp's engine settings one at a time, at the ALLaVA-3B shape, on this host.

  python bench/experiments/llamacpp_settings_sweep.py [--exports outputs/bench-allava3b/gguf] [--variants Q4_0,Q4_K_M]
      [--try n_ubatch=512,2048 --try flash_attn=off --try clip_flash_attn=off --try repack=false]
      [--cpu-variant haswell] [--repeats 2] [--tokens 16]

Why: the llama.cpp runtime's defaults (runtimes/llamacpp_settings.py) are chosen from measurements,
not taken from llama.cpp's own defaults; this prints those measurements. Each row is one variant
with the defaults, or the defaults with exactly one setting changed, each in a fresh process of the
bench's own worker (bench/harness/worker.py: the same image, prompt, timers and peak RSS as
`bench/run.py`), one after another, so the rows of one run are comparable with each other.
--cpu-variant forces one ggml CPU library (e.g. haswell: the AVX2 kernels of the portable build
this project shipped before runtime dispatch) through LLAMA_CPP_BACKEND_DIR.

Builds nothing: run `python bench/run.py --model allava-3b --random-init --benchmarks none` first
(it writes the GGUF variants under outputs/bench-allava3b/gguf). Not a test: figures belong to the
host; its CPU flags and the loaded CPU variant are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TRIES = ["n_ubatch=512,2048", "flash_attn=off", "clip_flash_attn=off", "repack=false"]


def parse_tries(tries: list[str]) -> list[dict[str, Any]]:
    """["n_ubatch=512,2048", "flash_attn=off"] -> [{}, {"n_ubatch": 512}, {"n_ubatch": 2048}, {"flash_attn": "off"}]."""
    rows: list[dict[str, Any]] = [{}]
    for t in tries:
        key, sep, values = t.partition("=")
        if not sep or not key or not values:
            raise SystemExit(f"error: --try {t!r}: expected KEY=VALUE[,VALUE...]")
        for raw in values.split(","):
            try:
                val = json.loads(raw)
            except ValueError:
                val = raw
            rows.append({key: val})
    return rows


def run_one(variant: Path, settings: dict[str, Any], threads: int, repeats: int, tokens: int,
            env: dict[str, str]) -> dict[str, Any]:
    """One fresh worker process: load with ``settings``, 1 warm-up + ``repeats`` timed generations."""
    from bench.harness import latency
    from bench.harness.runner import _probe_prompt

    job = {"format": "gguf", "path": str(variant), "threads": threads, "cpus": list(range(threads)),
           "latency": {"image": None, "image_size": 336, "prompt": _probe_prompt(), "max_new_tokens": tokens,
                       "repeats": repeats, "warmup": 1},
           "requests": [], "runtime": None, "settings": settings}
    with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
        (Path(tmp) / "job.pkl").write_bytes(pickle.dumps(job))
        p = subprocess.run([sys.executable, "-m", "bench.harness.worker", f"{tmp}/job.pkl", f"{tmp}/out"],
                           capture_output=True, text=True, cwd=REPO, env=env)
        res_path = Path(tmp) / "out" / "result.json"
        res = json.loads(res_path.read_text()) if res_path.is_file() else {}
    if p.returncode != 0 or not res.get("ok"):
        return {"error": res.get("error") or p.stderr.strip()[-300:]}
    lat = latency.summarize(res["latency"])
    return {"lat": {k: v["median"] for k, v in lat.items()}, "peak_rss_mb": res["peak_rss_mb"],
            "cpu_variant": (res.get("build_info") or {}).get("cpu_variant"), "settings": res.get("engine_settings")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exports", type=Path, default=Path("outputs/bench-allava3b/gguf"),
                    help="folder of GGUF variant folders (default: the full-size bench's)")
    ap.add_argument("--variants", default="Q4_0,Q4_K_M", help="comma list of variant folder names")
    ap.add_argument("--try", dest="tries", action="append", help="KEY=V1[,V2] to try one at a time against the "
                    f"defaults, repeatable (default: {' '.join(DEFAULT_TRIES)})")
    ap.add_argument("--cpu-variant", help="force one ggml CPU library, e.g. haswell (default: the best for this CPU)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed generations per row (after 1 warm-up)")
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per generation")
    a = ap.parse_args()
    from bench.harness.hostinfo import cpu_flags, cpu_model

    rows = parse_tries(a.tries or DEFAULT_TRIES)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(REPO)}
    forced = None
    if a.cpu_variant:
        import llama_cpp

        lib = Path(llama_cpp.__file__).parent / "lib" / f"libggml-cpu-{a.cpu_variant}.so"
        if not lib.is_file():
            raise SystemExit(f"error: {lib} does not exist (shipped: scripts/build_llama_cpp.sh)")
        forced = tempfile.mkdtemp(prefix="cpu-variant-")
        (Path(forced) / lib.name).symlink_to(lib)
        env["LLAMA_CPP_BACKEND_DIR"] = forced
    print(f"{cpu_model()} ({', '.join(cpu_flags())}), {a.threads} threads, 1 warm-up + {a.repeats} runs of "
          f"{a.tokens} tokens on one {336} px image, medians")
    print(f"{'variant':<10} {'setting':<24} {'cpu':<9} {'image ms':>9} {'TTFT s':>7} {'prefill t/s':>11} "
          f"{'decode t/s':>10} {'peak MiB':>9}")
    for name in a.variants.split(","):
        for settings in rows:
            r = run_one(a.exports / name, settings, a.threads, a.repeats, a.tokens, env)
            label = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
            if "error" in r:
                print(f"{name:<10} {label:<24} error: {r['error']}")
                continue
            lat = r["lat"]
            print(f"{name:<10} {label:<24} {r['cpu_variant'] or '?':<9} {lat['image_encode_ms']:>9.0f} "
                  f"{lat['ttft_ms'] / 1e3:>7.2f} {lat['prefill_tok_s']:>11.1f} {lat['decode_tok_s']:>10.2f} "
                  f"{r['peak_rss_mb']:>9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
