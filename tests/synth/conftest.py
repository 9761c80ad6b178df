"""Shared helpers for the synth tests: generated images, a CLI runner, the scripted server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "synth" / "run.py"
API_KEY = "sk-test-SECRET-9f8e7d6c5b4a"


def make_images(folder: Path, n: int, size: tuple[int, int] = (520, 512)) -> list[Path]:
    """``n`` distinct small PNGs (distinct pixels, so distinct content hashes)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = Image.new("RGB", size, (i % 256, (i * 7) % 256, (i * 13) % 256))
        img.putpixel((i % size[0], 0), (255, 255, 255))
        p = folder / f"img_{i:04d}.png"
        img.save(p)
        paths.append(p)
    return paths


def laion_key(path: Path) -> str:
    return "laion_" + hashlib.sha256(path.read_bytes()).hexdigest()[:20]


def run_cli(*args: str, env_key: str | None = API_KEY, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    if env_key is not None:
        env["OPENAI_API_KEY"] = env_key
    return subprocess.run([sys.executable, str(RUN), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return make_images(tmp_path / "images", 12)
