"""Host facts recorded with every result: numbers mean nothing without the machine and library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from allava.formats import all_formats

COMMON_LIBRARIES = ("numpy", "pillow")  # plus every format's own (the format table's ``libraries``)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "asimd", "sve")  # what decides CPU kernels


def cpu_flags() -> list[str]:
    """The CPU features that change which kernels run (and so every timing): the machine kind."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith(("flags", "features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in SIMD_FLAGS if f in have]
    except OSError:
        pass
    return []


def total_ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in dict.fromkeys([*(lib for f in all_formats() for lib in f.libraries), *COMMON_LIBRARIES]):
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def host_facts() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu_model(), "machine": platform.machine(), "os": platform.platform(), "logical_cpus": os.cpu_count(),
            "usable_cpus": usable, "ram_gib": total_ram_gib(), "load_avg": os.getloadavg(), "versions": versions(),
            "cpu_flags": cpu_flags()}
