"""Runtimes: one interface (runtimes.base.Runtime) per export format, found through the format table.

A variant's manifest names its format; the format table (allava/formats.py) names the runtime
class by module path, imported only when used, so opening a GGUF never imports torch's exporter
stack and vice versa. A folder without a manifest is not guessed at: a Hugging Face folder opens as
the PyTorch reference only when asked for (``fmt="pytorch"``), because a quantized transformers
folder (GPTQ) has a config.json too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from allava.formats import REFERENCE, get_format
from allava.variant import MANIFEST, Manifest, is_variant

if TYPE_CHECKING:
    from runtimes.base import Runtime


def runtime_class(fmt: str) -> type[Runtime]:
    """The runtime class the format table names for ``fmt`` (UnknownFormatError lists the known ones)."""
    return get_format(fmt).runtime_class()


def detect_format(path: str | Path) -> str:
    """A variant's format, from its manifest only."""
    p = Path(path)
    if is_variant(p):
        return Manifest.read(p).format
    if (p / "config.json").is_file():
        raise FileNotFoundError(f"{p}: a Hugging Face folder without a variant {MANIFEST}; open it as the PyTorch "
                                f"reference with fmt={REFERENCE!r} (export/check.py and bench/run.py do)")
    raise FileNotFoundError(f"{p}: not an export variant (no {MANIFEST})")


def load_runtime(path: str | Path, threads: int | None = None, fmt: str | None = None,
                 settings: dict[str, Any] | None = None) -> Runtime:
    """Open any variant with the runtime its manifest (or ``fmt``) names; refuses a format this host
    cannot run with the table's reason ("not runnable here: needs ..."). ``settings``: the engine's
    load-time settings (a device profile's ``engine.<format>``), passed as keywords to its ``load``."""
    fmt = fmt or detect_format(path)
    reason = get_format(fmt).not_runnable_reason()
    if reason:
        raise RuntimeError(f"{path}: {fmt} is {reason}")
    return runtime_class(fmt)().load(path, threads, **(settings or {}))
