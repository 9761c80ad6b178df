"""Fixtures for the bench harness: a random tiny checkpoint, a very small world and GGUF exports (seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory) -> dict[str, Path]:
    """checkpoint (random tiny), world (3 held-out scenes) and exports/gguf/{F16,Q4_0}."""
    from allava.modeling import save_random_checkpoint
    from allava.world import WorldSpec, build_world

    root = tmp_path_factory.mktemp("bench_harness")
    ckpt = save_random_checkpoint(root / "ckpt")
    world = root / "world"
    build_world(world, WorldSpec(train_scenes=2, heldout_scenes=3, text_records=2), progress=False)
    exports = root / "exports"
    subprocess.run([sys.executable, str(REPO / "export/to_gguf.py"), str(ckpt), "--outdir", str(exports / "gguf"),
                    "--outtype", "f16"], check=True, capture_output=True, cwd=REPO)
    subprocess.run([sys.executable, str(REPO / "quantize/run.py"), "--format", "gguf", "--types", "q4_0",
                    "--export", str(exports / "gguf")], check=True, capture_output=True, cwd=REPO)
    return {"root": root, "checkpoint": ckpt, "world": world, "exports": exports}
