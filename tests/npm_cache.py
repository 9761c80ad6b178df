"""Node packages the tests run (transformers.js, puppeteer-core), installed once into a per-user cache.

Why a cache outside the repository: the packages are large and the same for every clone; installing into
a temporary folder and renaming it into place keeps a cut-short `npm install` from ever looking complete.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

NPM_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "allava-edge"


def package_version(folder: Path, package: str) -> str | None:
    """The version of node_modules/<package> under `folder`, or None when it is not installed."""
    pkg = folder / "node_modules" / package / "package.json"
    return json.loads(pkg.read_text())["version"] if pkg.is_file() else None


def npm_install(final: Path, package: str, version: str, env: dict[str, str] | None = None,
                complete: Callable[[Path], bool] | None = None, timeout: int = 1200) -> Path:
    """`final`, holding node_modules/<package>@<version> (installed into a temporary sibling, then renamed).

    `complete(folder)` says whether an install is whole (default: the package at the pinned version); a
    folder that exists but is not whole fails the test with the path to delete rather than being reused."""
    def whole(folder: Path) -> bool:
        return complete(folder) if complete else package_version(folder, package) == version

    if whole(final):
        return final
    if final.exists():
        pytest.fail(f"{final}: exists but holds no complete {package}@{version} install; delete it")
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=final.parent))
    try:
        name = "allava-edge-" + package.rsplit("/", 1)[-1]
        (stage / "package.json").write_text(json.dumps(
            {"name": name, "private": True, "dependencies": {package: version}}, indent=2) + "\n")
        p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=stage,
                           env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0 or not whole(stage):
            pytest.fail(f"npm install {package}@{version} failed (rc {p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
        try:
            os.rename(stage, final)
        except OSError:
            if not whole(final):  # anything but another run having finished the same install first
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return final
