"""Shared fixtures: a small built-in world and a small training config, made on the fly (no downloads)."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SMALL_WORLD = {"train_scenes": 160, "heldout_scenes": 12, "text_records": 64}


@pytest.fixture(scope="session")
def world_root(tmp_path_factory) -> Path:
    from allava.world import WorldSpec, build_world

    root = tmp_path_factory.mktemp("world")
    build_world(root, WorldSpec(**SMALL_WORLD), progress=False)
    return root


def small_config_dict(output_dir: Path, data_root: Path, steps: int = 4) -> dict:
    """A TrainConfig mapping for a few optimizer steps per stage on the small world."""
    return {
        "preset": "tiny",
        "output_dir": str(output_dir),
        "world": False,
        "data_root": str(data_root),
        "seed": 0,
        "precision": "auto",
        "threads": 2,
        "save_every": 2,
        "vision_pretrain": {"steps": 4, "batch_size": 8},
        "stages": [
            {
                "name": "pretrain",
                "sources": [{"path": "ALLaVA-Caption-World.json"}, {"path": "ALLaVA-Text-World.json", "ratio": 0.5}],
                "global_batch_size": 8,
                "micro_batch_size": 4,
                "lr": 1e-3,
                "min_lr": 1e-4,
                "max_steps": steps,
            },
            {
                "name": "finetune",
                "sources": [{"path": "ALLaVA-Instruct-World.json", "ratio": 0.5}, {"path": "ALLaVA-VQA-World.json"}],
                "global_batch_size": 8,
                "micro_batch_size": 4,
                "lr": 1e-3,
                "min_lr": 1e-4,
                "max_steps": steps,
                "max_length": 448,
            },
        ],
        "eval": {"file": "ALLaVA-Heldout-World.json", "max_new_tokens": 4, "limit": 16},
    }


# -- the trained default and a random tiny checkpoint, shared by the export, runtime and bench tests --

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
    """A seeded random tiny checkpoint (train/init_checkpoint.py's function)."""
    from allava.modeling import save_random_checkpoint

    warnings.filterwarnings("ignore")
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-random")


@pytest.fixture(scope="session")
def gguf_dir(tiny_ckpt, tmp_path_factory) -> Path:
    """F32 and F16 GGUF variants of ``tiny_ckpt``."""
    from export.to_gguf import export_gguf

    out = tmp_path_factory.mktemp("gguf")
    export_gguf(tiny_ckpt, out, "f32")
    export_gguf(tiny_ckpt, out, "f16")
    return out
