"""The ONNX export folder runs unchanged in transformers.js (node, offline) with PyTorch's greedy tokens.

A random tiny checkpoint is exported with ``python export/to_onnx.py``; transformers.js (npm
``@huggingface/transformers``, pinned, installed once into a cache folder this test owns) loads the
folder with ``AutoProcessor`` and ``LlavaForConditionalGeneration`` from a local path with remote
models disabled, and generates greedily on synthetic image prompts (tests/export/transformersjs_generate.mjs).
The criterion: on every prompt (>= 5) the processor's input ids equal Python transformers' and the
generated token ids are identical to PyTorch's. Parametrized over transformers.js dtypes: a dtype
whose graphs are not in the folder (q4 until its files are made here) skips and says so.

The folder must also stay what Python transformers opens: ``AutoProcessor.from_pretrained`` on it
gives the same input ids and pixel values as on the checkpoint.

Cache: $XDG_CACHE_HOME (or ~/.cache)/allava-edge/transformersjs/<version>/, made by ``npm install``
in a temporary folder renamed into place (so a half-finished install is never used), with
ONNXRUNTIME_NODE_INSTALL=skip (onnxruntime-node's postinstall would fetch GPU libraries from outside
the npm registry; the CPU runtime ships in the package).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

TRANSFORMERSJS = "@huggingface/transformers"
TRANSFORMERSJS_VERSION = "4.3.2"  # verified: fp32 tokens identical to PyTorch on the random and the trained tiny model
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "allava-edge" / "transformersjs"
SCRIPT = REPO / "tests/export/transformersjs_generate.mjs"
N_PROMPTS = 6
MAX_NEW_TOKENS = 20
# transformers.js dtype -> the file suffix of its graphs (transformers.js' DEFAULT_DTYPE_SUFFIX_MAPPING)
DTYPES = {"fp32": "", "q4": "_q4"}
# dtypes the fixture makes beside the fp32 export: "q4" goes here once quantize/run.py --format onnx makes
# it (python quantize/run.py --format onnx --types q4 --export DIR); until then the q4 parameter skips.
QUANTIZE_IN_FIXTURE: tuple[str, ...] = ()

pytestmark = pytest.mark.slow
needs_node = pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")),
                                reason="node and npm are not on PATH (transformers.js runs in node)")


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def _installed(folder: Path) -> bool:
    pkg = folder / "node_modules" / TRANSFORMERSJS / "package.json"
    ort = folder / "node_modules" / "onnxruntime-node" / "package.json"
    return pkg.is_file() and ort.is_file() and json.loads(pkg.read_text())["version"] == TRANSFORMERSJS_VERSION


def transformersjs_install() -> Path:
    """The cache folder holding node_modules/@huggingface/transformers at the pinned version (installed once)."""
    final = CACHE / TRANSFORMERSJS_VERSION
    if _installed(final):
        return final
    if final.exists():
        pytest.fail(f"{final}: exists but holds no complete {TRANSFORMERSJS}@{TRANSFORMERSJS_VERSION} install; delete it")
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{TRANSFORMERSJS_VERSION}.", suffix=".tmp", dir=final.parent))
    try:
        (stage / "package.json").write_text(json.dumps(
            {"name": "allava-edge-transformersjs", "private": True,
             "dependencies": {TRANSFORMERSJS: TRANSFORMERSJS_VERSION}}, indent=2) + "\n")
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
        p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=stage, env=env,
                           capture_output=True, text=True, timeout=1200)
        if p.returncode != 0 or not _installed(stage):
            pytest.fail(f"npm install {TRANSFORMERSJS}@{TRANSFORMERSJS_VERSION} failed (rc {p.returncode}):\n"
                        f"{(p.stdout + p.stderr)[-3000:]}")
        try:
            os.rename(stage, final)
        except OSError:
            if not _installed(final):  # anything but another run having finished the same install first
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return final


@pytest.fixture(scope="module")
def prompts():
    from export.parity import synthetic_prompts

    return synthetic_prompts(N_PROMPTS, 96, seed=0)


@pytest.fixture(scope="module")
def onnx_folder(tiny_ckpt: Path, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[onnx]'")
    out = tmp_path_factory.mktemp("tjs") / "tiny-onnx"
    p = _python("export/to_onnx.py", str(tiny_ckpt), "--outdir", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    for dtype in QUANTIZE_IN_FIXTURE:
        p = _python("quantize/run.py", "--format", "onnx", "--types", dtype, "--export", str(out))
        assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def pytorch_tokens(tiny_ckpt: Path, prompts) -> dict[str, list[int]]:
    from runtimes import load_runtime

    rt = load_runtime(tiny_ckpt, 1, fmt="pytorch")
    return {p.id: list(rt.generate(p.image, p.prompt, MAX_NEW_TOKENS).token_ids) for p in prompts}


def _python_input_ids(folder: Path, prompts) -> dict[str, list[int]]:
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(folder)
    return {p.id: proc(images=p.image, text=p.prompt, return_tensors="np")["input_ids"][0].tolist() for p in prompts}


def test_folder_processor_matches_checkpoint(tiny_ckpt: Path, onnx_folder: Path, prompts):
    """Python transformers opens the export folder's processor with the checkpoint's ids and pixels."""
    import numpy as np
    from transformers import AutoProcessor

    ck, ours = AutoProcessor.from_pretrained(tiny_ckpt), AutoProcessor.from_pretrained(onnx_folder)
    n_image = json.loads((tiny_ckpt / "config.json").read_text())["image_seq_length"]
    for p in prompts:
        a = ck(images=p.image, text=p.prompt, return_tensors="np")
        b = ours(images=p.image, text=p.prompt, return_tensors="np")
        assert b["input_ids"].tolist() == a["input_ids"].tolist(), p.id
        assert int((b["input_ids"] == ours.image_token_id).sum()) == n_image, p.id
        np.testing.assert_array_equal(b["pixel_values"], a["pixel_values"])


@needs_node
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_transformersjs_greedy_equals_pytorch(dtype: str, onnx_folder: Path, tiny_ckpt: Path, prompts,
                                              pytorch_tokens, tmp_path: Path):
    graph = onnx_folder / "onnx" / f"decoder_model_merged{DTYPES[dtype]}.onnx"
    if not graph.is_file():
        pytest.skip(f"onnx/{graph.name} is absent from the export: the {dtype} graphs are not made here yet "
                    f"(add {dtype!r} to QUANTIZE_IN_FIXTURE once quantize/run.py --format onnx makes them)")
    install = transformersjs_install()
    items = []
    for p in prompts:
        image = tmp_path / f"{p.id}.png"  # PNG: lossless, the pixels PyTorch saw
        p.image.save(image)
        items.append({"id": p.id, "image": str(image), "prompt": p.prompt})
    (tmp_path / "items.json").write_text(json.dumps(items))
    run = subprocess.run(["node", str(SCRIPT), "--transformers", str(install), "--model", str(onnx_folder),
                          "--dtype", dtype, "--items", str(tmp_path / "items.json"),
                          "--max-new-tokens", str(MAX_NEW_TOKENS)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"transformers.js failed (rc {run.returncode}):\n{run.stderr[-3000:]}"
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["version"] == TRANSFORMERSJS_VERSION and len(out["results"]) == len(prompts) >= 5
    python_ids = _python_input_ids(tiny_ckpt, prompts)
    for res in out["results"]:
        assert res["input_ids"] == python_ids[res["id"]], (
            f"{res['id']}: transformers.js' processor ids differ from Python transformers' "
            f"(lengths {len(res['input_ids'])} vs {len(python_ids[res['id']])})")
    mismatches = []
    for res in out["results"]:
        ref, got = pytorch_tokens[res["id"]], res["token_ids"]
        if got != ref:
            k = next((i for i, (a, b) in enumerate(zip(ref, got, strict=False)) if a != b), min(len(ref), len(got)))
            mismatches.append(f"{res['id']}: first difference at generated token {k}: PyTorch "
                              f"{ref[k] if k < len(ref) else 'end'} vs transformers.js {got[k] if k < len(got) else 'end'}"
                              f" (PyTorch {ref}, transformers.js {got})")
    print(f"transformers.js {out['version']} {dtype}: {len(prompts) - len(mismatches)}/{len(prompts)} prompts identical")
    assert not mismatches, "\n".join(mismatches)
