"""Shared fixtures: a small built-in world and a small training config, made on the fly (no downloads)."""

from __future__ import annotations

import os
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
