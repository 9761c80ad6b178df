"""Roofline for decode: how close a variant gets to the memory-bandwidth limit.

Why this model: decoding one token reads (about) every language-model weight once, so the best
possible rate is bandwidth / bytes-per-token. The fraction achieved tells whether a variant is
bandwidth-bound (near 1: only fewer bytes help, i.e. lower bits) or compute/overhead-bound (low:
threads, kernels or Python overhead are the bottleneck). Models small enough to sit in the CPU
caches can exceed 1 against DRAM bandwidth; the report says so rather than clipping.
"""

from __future__ import annotations

import time

import numpy as np


def measure_bandwidth(mib: int = 256, repeats: int = 3) -> float:
    """Host memory bandwidth in GB/s from copying a large array (read + write bytes), best of N.

    A numpy copy is what STREAM's 'copy' kernel measures, single-threaded; it is a lower bound on
    what multi-threaded llama.cpp can pull, which is why fractions are reported, not verdicts."""
    n = mib * 2**20 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def max_decode_tok_s(bandwidth_gbs: float, bytes_per_token: int) -> float:
    return bandwidth_gbs * 1e9 / bytes_per_token if bytes_per_token else 0.0


def roofline_fraction(decode_tok_s: float, bytes_per_token: int, bandwidth_gbs: float) -> float | None:
    """Achieved decode rate over the bandwidth-bound rate (None when unknown)."""
    limit = max_decode_tok_s(bandwidth_gbs, bytes_per_token)
    return decode_tok_s / limit if limit and decode_tok_s else None
