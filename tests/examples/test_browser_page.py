"""examples/browser/ works: the ONNX export folder answers in headless Chromium through transformers.js (WASM).

The README claims browsers through transformers.js; this is the proof (issue 25). A random tiny
checkpoint is exported with ``python export/to_onnx.py``; examples/browser/serve.py serves the page,
the npm packages' own dist files (transformers.js' web build, onnxruntime-web's WASM files) and the
folder from 127.0.0.1; tests/examples/browser_drive.mjs drives Debian's Chromium with puppeteer-core
(installed once into a cache folder with PUPPETEER_SKIP_DOWNLOAD=1: no browser is downloaded) the way a
person uses the page: choose an image, type the question, press Ask, read the answer.

Criteria, on held-out images of the built-in world and on images of other sizes (non-native, square and
non-square): the prompt the page renders from messages with the folder's template and its input ids
equal Python transformers' processor on the checkpoint; pixel values are within 1e-3 of Python's; the
fp32 greedy tokens (and the answer the page shows) equal PyTorch's; every request stays on 127.0.0.1.
A screenshot per answer lands in the test's tmp folder (path printed).

Skipped when node/npm or Chromium are missing (scripts/install.sh installs Debian's ``chromium`` when it can).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.export.test_onnx_transformersjs import (
    MAX_NEW_TOKENS,
    OTHER_SIZES,
    compare_inputs,
    python_reference,
    question_of,
    sized_prompts,
    token_mismatches,
    transformersjs_install,
)
from tests.npm_cache import NPM_CACHE, npm_install

PUPPETEER = "puppeteer-core"
PUPPETEER_VERSION = "25.19.0"  # drives Debian bookworm's chromium 156 over CDP
DRIVER = REPO / "tests/examples/browser_drive.mjs"
N_HELDOUT = 4


def chromium() -> str | None:
    """The system Chromium: $CHROMIUM, else Debian's chromium / chromium-headless-shell on PATH."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).is_file():
        return env
    return next((p for p in map(shutil.which, ("chromium", "chromium-headless-shell", "chromium-browser")) if p), None)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")), reason="node and npm are not on PATH"),
    pytest.mark.skipif(chromium() is None, reason="no Chromium (apt-get install chromium; scripts/install.sh does as root)"),
]


def puppeteer_install() -> Path:
    """A cache folder holding node_modules/puppeteer-core at the pinned version (installed once, atomically)."""
    return npm_install(NPM_CACHE / "puppeteer-core" / PUPPETEER_VERSION, PUPPETEER, PUPPETEER_VERSION,
                       env={"PUPPETEER_SKIP_DOWNLOAD": "1"}, timeout=900)


@pytest.fixture(scope="module")
def onnx_folder(tiny_ckpt: Path, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[onnx]'")
    out = tmp_path_factory.mktemp("browser") / "tiny-onnx"
    p = subprocess.run([sys.executable, "export/to_onnx.py", str(tiny_ckpt), "--outdir", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_serve_maps_only_the_page_vendor_and_model(onnx_folder: Path, tmp_path: Path):
    """The server hands out the page, the packages and the model, nothing else of the repository or disk."""
    import urllib.error
    import urllib.request

    sys.path.insert(0, str(REPO / "examples/browser"))
    from serve import make_server

    modules = transformersjs_install() / "node_modules"
    server = make_server(onnx_folder, modules)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        def get(path: str) -> tuple[int, object]:
            """(status, headers: case-insensitive)"""
            try:
                with urllib.request.urlopen(base + path) as r:
                    return r.status, r.headers
            except urllib.error.HTTPError as e:
                return e.code, e.headers

        status, headers = get("/")
        assert status == 200 and headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert get("/app.js")[1]["Content-Type"].startswith("text/javascript")
        assert get("/model/config.json")[0] == 200
        assert get("/vendor/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm")[1]["Content-Type"] == "application/wasm"
        for path in ("/serve.py", "/../../README.md", "/model/../../../etc/passwd", "/vendor/%2e%2e/%2e%2e/x"):
            assert get(path)[0] == 404, path
    finally:
        server.shutdown()


def test_page_answers_like_pytorch(tiny_ckpt: Path, onnx_folder: Path, world_root: Path, tmp_path: Path):
    """Held-out and other-size images through the page's UI: ids, pixels, tokens and the shown answer equal Python's."""
    from export.parity import heldout_prompts
    from runtimes import load_runtime

    sys.path.insert(0, str(REPO / "examples/browser"))
    from serve import make_server

    heldout = {}  # one question per held-out image, N_HELDOUT images
    for p in heldout_prompts(world_root / "ALLaVA-Heldout-World.json", 200):
        heldout.setdefault(p.image.tobytes(), p)
    prompts = list(heldout.values())[:N_HELDOUT] + sized_prompts(OTHER_SIZES)
    assert len(prompts) == N_HELDOUT + len(OTHER_SIZES)
    rt = load_runtime(tiny_ckpt, 1, fmt="pytorch")
    pytorch = {p.id: rt.generate(p.image, p.prompt, MAX_NEW_TOKENS) for p in prompts}
    reference = python_reference(tiny_ckpt, prompts)

    items = []
    for p in prompts:
        image = tmp_path / f"{p.id}.png"  # PNG: lossless, the pixels PyTorch saw
        p.image.save(image)
        items.append({"id": p.id, "image": str(image), "question": question_of(p.prompt)})
    (tmp_path / "items.json").write_text(json.dumps(items))
    shots = tmp_path / "screenshots"
    shots.mkdir()

    server = make_server(onnx_folder, transformersjs_install() / "node_modules")
    url = f"http://127.0.0.1:{server.server_address[1]}/?max_new_tokens={MAX_NEW_TOKENS}&threads=1"
    try:
        run = subprocess.run(["node", str(DRIVER), "--puppeteer", str(puppeteer_install()), "--chromium", chromium(),
                              "--url", url, "--items", str(tmp_path / "items.json"), "--screenshots", str(shots)],
                             capture_output=True, text=True, timeout=900)
    finally:
        server.shutdown()
    assert run.returncode == 0, f"browser run failed (rc {run.returncode}):\n{run.stderr[-4000:]}"
    out = json.loads(run.stdout.strip().splitlines()[-1])
    results = out["results"]
    assert [r["id"] for r in results] == [p.id for p in prompts]
    assert out["requests"]["remote"] == [], f"requests left 127.0.0.1: {out['requests']['remote'][:5]}"

    compare_inputs(results, reference, f"in {out['browser']}")
    mismatches = token_mismatches(results, {k: list(g.token_ids) for k, g in pytorch.items()})
    print(f"{out['browser']}: {len(results) - len(mismatches)}/{len(results)} answers identical to PyTorch; "
          f"screenshots in {shots}")
    assert not mismatches, "\n".join(mismatches)
    for r in results:
        assert r["answer"] == pytorch[r["id"]].text.strip(), (r["id"], r["answer"], pytorch[r["id"]].text)
        assert r["shown"] == (r["answer"] or "(empty answer)"), r["id"]
        assert Path(r["screenshot"]).stat().st_size > 10_000, r["screenshot"]
