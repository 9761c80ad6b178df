"""Which of ggml's CPU backends this process runs: the variant library and the kernels compiled into it.

Why: scripts/build_llama_cpp.sh ships one libggml-cpu-<level>.so per x86 level (GGML_BACKEND_DL +
GGML_CPU_ALL_VARIANTS) and ggml loads the best one for the CPU at start-up, so the same install runs
AVX2 kernels on one machine and AVX-512 VNNI/BF16 kernels on the next. Every llama.cpp timing means
nothing without naming the variant that produced it; the bench records it in its host section.

  python -m runtimes.llamacpp_cpu     # print the loaded variant and its features as JSON
"""

from __future__ import annotations

import ctypes
import json
import re
from pathlib import Path
from typing import Any

VARIANT_LIB = re.compile(r"libggml-cpu(?:-(?P<tag>[A-Za-z0-9_.]+))?\.so")


class _Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


def loaded_cpu_library(maps: str | None = None) -> Path | None:
    """The libggml-cpu*.so mapped into this process (from /proc/self/maps), or None."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text(encoding="utf-8")
        except OSError:
            return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if VARIANT_LIB.search(Path(path).name or ""):
            return Path(path)
    return None


def variant_name(library: Path | None) -> str | None:
    """'zen4' for libggml-cpu-zen4.so; 'linked' for a build with the CPU backend linked in (no tag)."""
    if library is None:
        return None
    m = VARIANT_LIB.search(library.name)
    return (m.group("tag") or "linked") if m else None


def cpu_features(lib_dir: Path) -> list[str]:
    """Features compiled into the registered CPU backend (ggml_backend_get_features), e.g. AVX512_VNNI."""
    base = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
    ggml = ctypes.CDLL(str(lib_dir / "libggml.so"))
    ggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    reg = ggml.ggml_backend_reg_by_name(b"CPU")
    if not reg:
        return []
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    addr = base.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    if not addr:
        return []
    get = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)(addr)
    feats, out = get(reg), []
    i = 0
    while feats[i].name:
        value = feats[i].value.decode()
        out.append(feats[i].name.decode() + ("" if value == "1" else f"={value}"))
        i += 1
    return out


def cpu_backend() -> dict[str, Any]:
    """{'cpu_variant', 'cpu_library', 'cpu_features', 'backend_dl'} of the llama_cpp this process imported."""
    import llama_cpp  # registers the backends (patches/llama-cpp-python/0002)

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    library = loaded_cpu_library()
    try:
        features = cpu_features(lib_dir)
    except (OSError, AttributeError):
        features = []
    return {"cpu_variant": variant_name(library), "cpu_library": str(library) if library else None,
            "cpu_features": features, "backend_dl": bool(list(lib_dir.glob("libggml-cpu-*.so")))}


if __name__ == "__main__":
    print(json.dumps(cpu_backend(), indent=2))
