"""Benchmark: ONNX Runtime session settings for the ONNX runtime's decode loop, measured in one run.

  python bench/experiments/onnx_session_options.py [--variant outputs/exports/onnx/variants/Q4] [--threads 2]

For each setting (graph optimisation level, CPU memory arena, execution mode) it loads the variant
in a fresh process, warms up once, then times --runs generations of --tokens new tokens
(ignore_eos) on one image and prints the median TTFT, decode tok/s and the share of decode time
spent inside the decoder's session.run (what is left is this loop's Python: feeding numpy arrays,
argmax, the embedding call). The runtime's defaults (runtimes/onnx_runtime.py SESSION_DEFAULTS)
are the fastest row; rerun this on your host before changing them. Not a test: figures vary with
the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

SETTINGS = [
    {},
    {"graph_optimization_level": "extended"},
    {"graph_optimization_level": "basic"},
    {"cpu_mem_arena": False},
    {"execution_mode": "parallel"},
]


def measure(variant: Path, threads: int, tokens: int, runs: int, settings: dict) -> dict:
    """One setting in this process: TTFT, decode rate, and the decoder's share of the decode time."""
    from export.parity import synthetic_prompts
    from runtimes.onnx_runtime import OnnxRuntime

    rt = OnnxRuntime().load(variant, threads, **settings)
    p = synthetic_prompts(1, rt.pre.crop[0], seed=1)[0]
    rt.generate(p.image, p.prompt, tokens, ignore_eos=True)
    rows = []
    for _ in range(runs):
        g = rt.generate(p.image, p.prompt, tokens, ignore_eos=True)
        rows.append({"ttft_ms": g.timings.ttft_ms, "decode_tok_s": g.timings.decode_tok_s,
                     "in_session": rt.last_decode_share})
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", type=Path, default=Path("outputs/exports/onnx/variants/Q4"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting (JSON) in this process
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(measure(a.variant, a.threads, a.tokens, a.runs, json.loads(a.one))))
        return 0
    print(f"{a.variant}, {a.threads} threads, {a.runs} runs of {a.tokens} tokens (medians)")
    print(f"{'setting':<40} {'TTFT ms':>9} {'decode tok/s':>13} {'in session.run':>15}")
    for s in SETTINGS:
        cmd = [sys.executable, __file__, "--variant", str(a.variant), "--threads", str(a.threads), "--tokens",
               str(a.tokens), "--runs", str(a.runs), "--one", json.dumps(s)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{json.dumps(s) or 'defaults':<40} failed: {out.stderr.strip()[-300:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        share = f"{100 * r['in_session']:.0f}%" if r["in_session"] is not None else "-"
        print(f"{json.dumps(s) if s else 'defaults':<40} {r['ttft_ms']:>9.1f} {r['decode_tok_s']:>13.1f} {share:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
