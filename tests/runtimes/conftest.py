"""Fixtures for the runtime tests: a random tiny checkpoint and its F32/F16 GGUF exports per session."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAINED = REPO / "outputs/tiny"
HELDOUT = REPO / "outputs/world/ALLaVA-Heldout-World.json"
HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAS_LLAMA, reason="llama_cpp is not importable: run scripts/build_llama_cpp.sh")
needs_trained = pytest.mark.skipif(
    not ((TRAINED / "config.json").is_file() and HELDOUT.is_file()),
    reason="needs the trained tiny checkpoint (outputs/tiny) and held-out set (outputs/world): run python train/run.py",
)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    from export.random_checkpoint import make_random_checkpoint

    warnings.filterwarnings("ignore")
    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-random")


@pytest.fixture(scope="session")
def gguf_dir(tiny_ckpt, tmp_path_factory) -> Path:
    from export.to_gguf import export_gguf

    out = tmp_path_factory.mktemp("gguf")
    export_gguf(tiny_ckpt, out, "f32")
    export_gguf(tiny_ckpt, out, "f16")
    return out
