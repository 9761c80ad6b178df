"""What this machine's CPU computes natively, for the stages that pick a compute dtype."""

from __future__ import annotations


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run in hardware (oneDNN).

    Why it matters: on an AVX2-only CPU oneDNN emulates bf16, and autocast made a tiny-default step
    34x slower than fp32 (13.3 s against 0.39 s, AMD EPYC, 2 threads); a full-size ALLaVA-3B forward
    pass for the GGUF importance matrix took 209 s per sample in bf16 there; on AMX Xeons bf16 is
    ~2x faster than fp32.
    """
    import torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)
