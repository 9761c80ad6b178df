"""Host facts recorded with every result: numbers mean nothing without the machine and library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "transformers", "numpy", "llama_cpp_python", "gguf", "onnxruntime", "pillow")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return out


def llama_build() -> dict[str, Any] | None:
    """Whether the llama.cpp build carries the project's patch (runtimes/llamacpp_patch.py)."""
    try:
        from runtimes.llamacpp_runtime import build_info

        return build_info()
    except Exception as exc:  # noqa: BLE001 - host facts must never fail a run
        return {"error": f"{type(exc).__name__}: {exc}"}


def host_facts() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu_model(), "machine": platform.machine(), "os": platform.platform(), "logical_cpus": os.cpu_count(),
            "usable_cpus": usable, "ram_gib": total_ram_gib(), "load_avg": os.getloadavg(), "versions": versions(),
            "llama_cpp_build": llama_build()}
