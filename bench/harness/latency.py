"""Summaries of the timed repeats: median and spread per metric, and the harness overhead ratio.

Why median + spread: a shared CPU has outliers (another process wakes up); the median is what a user
sees, the spread (population std, min, max, like llama-bench's ±) says how much to trust it.
"""

from __future__ import annotations

import statistics
from typing import Any

METRICS = ("image_encode_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s", "n_prompt_tokens", "n_generated")


def summarize(repeats: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{metric: {median, std, min, max, n}} over the repeats."""
    out: dict[str, dict[str, float]] = {}
    for m in METRICS:
        vals = [float(r[m]) for r in repeats if r.get(m) is not None]
        if not vals:
            continue
        out[m] = {"median": statistics.median(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
                  "min": min(vals), "max": max(vals), "n": len(vals)}
    return out


def native_decode_tok_s(perf: dict[str, float] | None) -> float | None:
    """The engine's own decode rate (a runtime's perf counters): single-token evals over their summed time."""
    if not perf or not perf.get("n_eval") or not perf.get("t_eval_ms"):
        return None
    return perf["n_eval"] / (perf["t_eval_ms"] / 1e3)


def overhead_ratio(repeats: list[dict[str, Any]]) -> dict[str, float] | None:
    """Harness decode tok/s / the engine's own decode tok/s for the same generations (1.0 = no overhead).

    Only for runtimes with the perf_counters capability (llama.cpp's llama_perf_context). The
    harness clock also covers the per-token work around the engine (batch fill, sampling call,
    loop), so the ratio is the share of decode time spent inside the engine."""
    ratios, native = [], []
    for r in repeats:
        ll = native_decode_tok_s(r.get("perf"))
        if ll and r.get("decode_tok_s"):
            ratios.append(r["decode_tok_s"] / ll)
            native.append(ll)
    if not ratios:
        return None
    return {"ratio": statistics.median(ratios), "native_decode_tok_s": statistics.median(native),
            "min": min(ratios), "n": len(ratios)}
