"""Runtimes: one interface (runtimes.base.Runtime) per export format, looked up by manifest format.

The registry maps a manifest `format` to "module:Class" and imports lazily, so using the GGUF
runtime never imports torch's exporter stack and vice versa. Add ONNX/GPTQ/CoreML with one line.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtimes.base import Runtime

REGISTRY: dict[str, str] = {
    "pytorch": "runtimes.torch_runtime:TorchRuntime",
    "gguf": "runtimes.llamacpp_runtime:LlamaCppRuntime",
}


def runtime_class(fmt: str) -> type[Runtime]:
    if fmt not in REGISTRY:
        raise KeyError(f"no runtime for format {fmt!r}; known: {', '.join(sorted(REGISTRY))}")
    mod, cls = REGISTRY[fmt].split(":")
    return getattr(importlib.import_module(mod), cls)


def detect_format(path: str | Path) -> str:
    """A variant's format from its manifest; an HF model folder (config.json, no manifest) is 'pytorch'."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        return json.loads((p / "manifest.json").read_text())["format"]
    if (p / "config.json").is_file():
        return "pytorch"
    raise FileNotFoundError(f"{p}: neither an export variant (manifest.json) nor a Hugging Face folder (config.json)")


def load_runtime(path: str | Path, threads: int | None = None, fmt: str | None = None) -> Runtime:
    """Open any variant with the runtime its manifest names."""
    return runtime_class(fmt or detect_format(path))().load(path, threads)
