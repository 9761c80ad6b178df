"""llama.cpp's runtime CPU dispatch (scripts/build_llama_cpp.sh): one ggml CPU library per x86 level,
the best one for this host loaded, none with AMX, and the same build under the Python package and the
upstream tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, needs_llama

TOOLS_BIN = REPO / ".cache/llama-cpp-tools/bin"
# The x86 variants scripts/build_llama_cpp.sh ships and the ISA extensions each is compiled for (ggml's
# GGML_CPU_ALL_VARIANTS list less sapphirerapids, the only AMX one), in /proc/cpuinfo's flag names.
_BASE = ["sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"]
VARIANTS: dict[str, list[str]] = {
    "x64": [], "sse42": ["sse4_2"], "sandybridge": ["sse4_2", "avx"], "ivybridge": ["sse4_2", "avx", "f16c"],
    "piledriver": ["sse4_2", "avx", "f16c", "fma"], "haswell": _BASE, "skylakex": [*_BASE, "avx512f"],
    "cannonlake": [*_BASE, "avx512f", "avx512vbmi"], "cascadelake": [*_BASE, "avx512f", "avx512_vnni"],
    "icelake": [*_BASE, "avx512f", "avx512vbmi", "avx512_vnni"],
    "cooperlake": [*_BASE, "avx512f", "avx512_vnni", "avx512_bf16"],
    "zen4": [*_BASE, "avx512f", "avx512vbmi", "avx512_vnni", "avx512_bf16"], "alderlake": [*_BASE, "avx_vnni"],
}


def _host_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def expected_variant(flags: set[str]) -> str:
    """The variant ggml's scorer picks: the one with the most extensions, all of them on this CPU."""
    fits = [name for name, need in VARIANTS.items() if set(need) <= flags]
    return max(fits, key=lambda n: len(VARIANTS[n]))


def test_expected_variant_table():
    """The scorer model above on the machine kinds this project meets (AMX Xeons get zen4's kernels)."""
    zen4_epyc = {*_BASE, "avx512f", "avx512vbmi", "avx512_vnni", "avx512_bf16"}
    assert expected_variant(zen4_epyc) == "zen4"
    assert expected_variant(zen4_epyc | {"amx_tile", "amx_int8", "amx_bf16", "avx_vnni"}) == "zen4"
    assert expected_variant(set(_BASE)) == "haswell"


def _llama_lib_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib"


@needs_llama
def test_shipped_variants_have_no_amx():
    """Every x86 level ships, except the AMX one whose kernels crash on quantized GGUFs (llama.cpp #20824)."""
    for lib_dir in (_llama_lib_dir(), TOOLS_BIN):
        shipped = {p.name.removeprefix("libggml-cpu-").removesuffix(".so") for p in lib_dir.glob("libggml-cpu-*.so")}
        assert shipped == set(VARIANTS), lib_dir
        for lib in lib_dir.glob("libggml-cpu-*.so"):
            # the AMX extra buffer type is compiled only with AMX_INT8; its symbol must be in no library
            assert b"ggml_backend_amx_buffer_type" not in lib.read_bytes(), lib


@needs_llama
def test_python_package_and_tools_share_one_build():
    """llama-cpp-python and llama-mtmd-cli/llama-bench load byte-identical libraries."""
    for name in ("libllama.so", "libmtmd.so", "libggml.so", "libggml-base.so", "libggml-cpu-zen4.so"):
        assert (_llama_lib_dir() / name).read_bytes() == (TOOLS_BIN / name).read_bytes(), name
    for tool in ("llama-mtmd-cli", "llama-bench"):
        assert os.access(TOOLS_BIN / tool, os.X_OK), tool


@needs_llama
def test_this_host_loads_its_best_variant():
    from runtimes.llamacpp_cpu import cpu_backend

    info = cpu_backend()
    assert info["backend_dl"]
    assert info["cpu_variant"] == expected_variant(_host_flags())
    assert "AMX_INT8" not in info["cpu_features"]
    if "avx512_vnni" in _host_flags():
        assert "AVX512_VNNI" in info["cpu_features"]


_PROBE = """
import json, sys
from runtimes.llamacpp_cpu import cpu_backend
from runtimes.llamacpp_runtime import LlamaCppRuntime
from PIL import Image
rt = LlamaCppRuntime().load(sys.argv[1], 2)
img = Image.new("RGB", (64, 48), (200, 40, 90))
from runtimes.base import IMAGE_MARKER
logits = rt.first_token_logits(img, f"USER: {IMAGE_MARKER}\\nWhat is this? ASSISTANT:")
print(json.dumps({**cpu_backend(), "logits": [float(x) for x in logits[:64]], "settings": rt.settings}))
"""


@needs_llama
@pytest.mark.parametrize("variant", ["haswell", "x64"])
def test_forced_variant_runs_and_agrees(gguf_dir: Path, tmp_path: Path, variant: str):
    """LLAMA_CPP_BACKEND_DIR forces one variant (how an AMX-free run is checked on any host): it loads,
    evaluates the GGUF and gives the auto-chosen variant's logits within float tolerance."""
    import numpy as np

    forced = tmp_path / variant
    forced.mkdir()
    (forced / f"libggml-cpu-{variant}.so").symlink_to(_llama_lib_dir() / f"libggml-cpu-{variant}.so")
    runs = {}
    for name, env in (("auto", {}), (variant, {"LLAMA_CPP_BACKEND_DIR": str(forced)})):
        p = subprocess.run([sys.executable, "-c", _PROBE, str(gguf_dir / "F32")], capture_output=True, text=True,
                           cwd=REPO, env={**os.environ, **env}, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        runs[name] = json.loads(p.stdout.strip().splitlines()[-1])
    assert runs[variant]["cpu_variant"] == variant
    assert runs["auto"]["cpu_variant"] == expected_variant(_host_flags())
    np.testing.assert_allclose(runs[variant]["logits"], runs["auto"]["logits"], rtol=1e-3, atol=1e-3)
