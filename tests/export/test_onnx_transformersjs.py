"""The ONNX export folder runs unchanged in transformers.js (node, offline) with PyTorch's greedy tokens.

A random tiny checkpoint is exported with ``python export/to_onnx.py``; transformers.js (npm
``@huggingface/transformers``, pinned, installed once into a cache folder this test owns) loads the
folder with ``AutoProcessor`` and ``LlavaForConditionalGeneration`` from a local path with remote
models disabled, and generates greedily on synthetic image prompts (tests/export/transformersjs_generate.mjs),
called as transformers.js users call it: messages with an image part and a text part, rendered by the
folder's own chat template (``processor.apply_chat_template``), then ``processor(image, text)``.
Images of any size go through examples/browser/llava_image.js first (transformers.js 4.3.2 has no
LlavaImageProcessor; the helper pads and resizes exactly as Pillow does).
The criterion: on every prompt the rendered prompt and the processor's input ids equal Python
transformers' (the checkpoint's processor, same messages), pixel values are within 1e-3 of Python's on
native and non-native, square and non-square images; the generated token ids are identical to PyTorch's
on every prompt for fp32 (random model: 6 native-size prompts and 8 of other sizes; the trained default,
8 held-out prompts) and for q4 (the trained default, 8 held-out prompts: README 8/8).

The folder must also stay what Python transformers opens: ``AutoProcessor.from_pretrained`` on it
gives the same input ids and pixel values as on the checkpoint.

Cache: $XDG_CACHE_HOME (or ~/.cache)/allava-edge/transformersjs/<version>/, made by ``npm install``
in a temporary folder renamed into place (so a half-finished install is never used), with
ONNXRUNTIME_NODE_INSTALL=skip (onnxruntime-node's postinstall would fetch GPU libraries from outside
the npm registry; the CPU runtime ships in the package).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HELDOUT, REPO, TRAINED, needs_trained
from tests.npm_cache import NPM_CACHE, npm_install, package_version

TRANSFORMERSJS = "@huggingface/transformers"
TRANSFORMERSJS_VERSION = "4.3.2"  # verified: fp32 tokens identical to PyTorch on the random and the trained tiny model
CACHE = NPM_CACHE / "transformersjs"
SCRIPT = REPO / "tests/export/transformersjs_generate.mjs"
N_PROMPTS = 6  # random tiny model, fp32
# (width, height): larger and smaller than the native 96, square and both orientations, extreme aspect ratios
OTHER_SIZES = [(160, 120), (96, 160), (200, 200), (240, 90), (64, 64), (120, 300), (333, 97), (1, 5)]
PIXEL_ATOL = 1e-3
N_TRAINED = 8  # held-out prompts of the trained default, fp32 and q4
MAX_NEW_TOKENS = 20

pytestmark = pytest.mark.slow
needs_node = pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")),
                                reason="node and npm are not on PATH (transformers.js runs in node)")


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def _installed(folder: Path) -> bool:
    return (package_version(folder, TRANSFORMERSJS) == TRANSFORMERSJS_VERSION
            and package_version(folder, "onnxruntime-node") is not None)


def transformersjs_install() -> Path:
    """The cache folder holding node_modules/@huggingface/transformers at the pinned version (installed once)."""
    return npm_install(CACHE / TRANSFORMERSJS_VERSION, TRANSFORMERSJS, TRANSFORMERSJS_VERSION,
                       env={"ONNXRUNTIME_NODE_INSTALL": "skip"}, complete=_installed)


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
    return out


@pytest.fixture(scope="module")
def pytorch_tokens(tiny_ckpt: Path, prompts) -> dict[str, list[int]]:
    from runtimes import load_runtime

    rt = load_runtime(tiny_ckpt, 1, fmt="pytorch")
    return {p.id: list(rt.generate(p.image, p.prompt, MAX_NEW_TOKENS).token_ids) for p in prompts}


def question_of(prompt: str) -> str:
    """The user's question inside a single-turn prompt (allava.chat.prompt_text's inverse)."""
    from allava.chat import prompt_text

    q = prompt.removeprefix("USER: <image>\n").removesuffix("\nASSISTANT:")
    assert prompt_text(q) == prompt, prompt
    return q


def messages_of(question: str) -> list[dict]:
    """A transformers-style chat: one user turn with an image part and a text part."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def sized_prompts(sizes: list[tuple[int, int]], seed: int = 1) -> list:
    """Synthetic prompts whose images are resized (Pillow, bilinear) to ``sizes``: photos that are not the native square."""
    from PIL import Image

    from export.parity import ParityPrompt, synthetic_prompts

    base = synthetic_prompts(len(sizes), 96, seed=seed)
    return [ParityPrompt(f"size_{w}x{h}", p.image.resize((w, h), Image.Resampling.BILINEAR), p.prompt)
            for (w, h), p in zip(sizes, base, strict=True)]


def python_reference(checkpoint: Path, prompts) -> dict[str, dict]:
    """Python transformers' processor on the checkpoint, from the same messages: rendered prompt, ids, pixels.

    Also checks that the rendered prompt is the one every runtime (and PyTorch's reference) is fed."""
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(checkpoint)
    out = {}
    for p in prompts:
        text = proc.apply_chat_template(messages_of(question_of(p.prompt)), add_generation_prompt=True)
        assert text == p.prompt, (text, p.prompt)
        enc = proc(images=p.image, text=text, return_tensors="np")
        out[p.id] = {"prompt": text, "input_ids": enc["input_ids"][0].tolist(), "pixel_values": enc["pixel_values"]}
    return out


def test_folder_chat_template_for_every_reader(tiny_ckpt: Path, onnx_folder: Path, prompts):
    """The template sits where transformers.js reads it (tokenizer_config.json) and where transformers does
    (chat_template.jinja), the same text; Python's processor and tokenizer render the checkpoint's prompt."""
    from transformers import AutoProcessor, AutoTokenizer

    jinja = (tiny_ckpt / "chat_template.jinja").read_text()
    assert json.loads((onnx_folder / "tokenizer_config.json").read_text())["chat_template"] == jinja
    assert (onnx_folder / "chat_template.jinja").read_text() == jinja
    proc, tok = AutoProcessor.from_pretrained(onnx_folder), AutoTokenizer.from_pretrained(onnx_folder)
    for p in prompts:
        msgs = messages_of(question_of(p.prompt))
        assert proc.apply_chat_template(msgs, add_generation_prompt=True) == p.prompt
        assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == p.prompt


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


def _transformersjs(folder: Path, dtype: str, prompts, tmp_path: Path, pixels: bool = False) -> list[dict]:
    """Greedy generations of transformers.js on ``prompts``: rendered prompt, processor ids (and pixels), answer ids."""
    install = transformersjs_install()
    items = []
    for p in prompts:
        image = tmp_path / f"{p.id}.png"  # PNG: lossless, the pixels PyTorch saw
        p.image.save(image)
        items.append({"id": p.id, "image": str(image), "question": question_of(p.prompt)})
    (tmp_path / "items.json").write_text(json.dumps(items))
    run = subprocess.run(["node", str(SCRIPT), "--transformers", str(install), "--model", str(folder),
                          "--dtype", dtype, "--items", str(tmp_path / "items.json"),
                          "--max-new-tokens", str(MAX_NEW_TOKENS), *(["--pixels"] if pixels else [])],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"transformers.js failed (rc {run.returncode}):\n{run.stderr[-3000:]}"
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["version"] == TRANSFORMERSJS_VERSION and len(out["results"]) == len(prompts)
    return out["results"]


def compare_inputs(results: list[dict], reference: dict[str, dict], label: str) -> dict[str, float]:
    """Rendered prompt and ids equal Python's on every prompt; pixels (when given) within PIXEL_ATOL.

    Returns the largest pixel difference per prompt (printed: the figure the README quotes)."""
    import numpy as np

    diffs = {}
    for res in results:
        ref = reference[res["id"]]
        assert res["prompt"] == ref["prompt"], f"{res['id']}: template rendered {res['prompt']!r} vs {ref['prompt']!r}"
        assert res["input_ids"] == ref["input_ids"], (
            f"{res['id']}: transformers.js' processor ids differ from Python transformers' "
            f"(lengths {len(res['input_ids'])} vs {len(ref['input_ids'])})")
        assert list(res["pixel_shape"]) == list(ref["pixel_values"].shape), res["id"]
        if "pixel_values" in res:
            got = np.asarray(res["pixel_values"], np.float32).reshape(res["pixel_shape"])
            diffs[res["id"]] = float(np.abs(got - ref["pixel_values"]).max())
    if diffs:
        print(f"transformers.js {label}: max |pixel diff| per image: "
              + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
        bad = {k: v for k, v in diffs.items() if v > PIXEL_ATOL}
        assert not bad, f"pixel values differ from Python's by more than {PIXEL_ATOL}: {bad}"
    return diffs


def token_mismatches(results: list[dict], pytorch: dict[str, list[int]]) -> list[str]:
    """The prompts whose generated ids differ from PyTorch's, each with its first difference."""
    mismatches = []
    for res in results:
        ref, got = pytorch[res["id"]], res["token_ids"]
        if got != ref:
            k = next((i for i, (a, b) in enumerate(zip(ref, got, strict=False)) if a != b), min(len(ref), len(got)))
            mismatches.append(f"{res['id']}: first difference at generated token {k}: PyTorch "
                              f"{ref[k] if k < len(ref) else 'end'} vs transformers.js {got[k] if k < len(got) else 'end'}"
                              f" (PyTorch {ref}, transformers.js {got})")
    return mismatches


def _compare(results: list[dict], checkpoint: Path, prompts, pytorch: dict[str, list[int]], label: str) -> list[str]:
    """Prompt, ids (and pixels) must equal Python's on every prompt; returns the prompts whose tokens differ."""
    compare_inputs(results, python_reference(checkpoint, prompts), label)
    mismatches = token_mismatches(results, pytorch)
    print(f"transformers.js {TRANSFORMERSJS_VERSION} {label}: {len(results) - len(mismatches)}/{len(results)} "
          "prompts identical to PyTorch")
    return mismatches


@needs_node
def test_transformersjs_fp32_greedy_equals_pytorch(onnx_folder: Path, tiny_ckpt: Path, prompts, pytorch_tokens,
                                                   tmp_path: Path):
    """Random tiny model, fp32, native 96 px: every prompt identical (its near-ties make it the strict case)."""
    results = _transformersjs(onnx_folder, "fp32", prompts, tmp_path, pixels=True)
    mismatches = _compare(results, tiny_ckpt, prompts, pytorch_tokens, "fp32, random tiny model")
    assert not mismatches, "\n".join(mismatches)


@needs_node
def test_transformersjs_images_of_other_sizes(onnx_folder: Path, tiny_ckpt: Path, tmp_path: Path):
    """Photos that are not the native square: pixels within 1e-3 of Python's and PyTorch's tokens on every one.

    Without examples/browser/llava_image.js transformers.js 4.3.2 centre-crops with its own resize (pixels
    off by up to 3.47, 2 of 6 answers equal, issue 25); with it, Pillow's bytes (measured 2.4e-7)."""
    from runtimes import load_runtime

    prompts = sized_prompts(OTHER_SIZES)
    rt = load_runtime(tiny_ckpt, 1, fmt="pytorch")
    pytorch = {p.id: list(rt.generate(p.image, p.prompt, MAX_NEW_TOKENS).token_ids) for p in prompts}
    results = _transformersjs(onnx_folder, "fp32", prompts, tmp_path, pixels=True)
    mismatches = _compare(results, tiny_ckpt, prompts, pytorch, "fp32, random tiny model, other sizes")
    assert not mismatches, "\n".join(mismatches)


@needs_node
@needs_trained
@pytest.mark.parametrize("dtype,min_identical", [("fp32", N_TRAINED), ("q4", N_TRAINED)])
def test_transformersjs_on_the_trained_default(dtype: str, min_identical: int, tmp_path_factory, tmp_path: Path):
    """The trained default on held-out image prompts: fp32 and q4 identical to PyTorch on all 8 (README).

    q4 was held to 5 of 8 before, for fear of near-ties (4-bit weights move logits by up to ~0.8, and
    transformers.js 4.3.2 bundles onnxruntime-node 1.30, whose 4-bit kernel rounds differently from the
    Python onnxruntime); measured, it gave PyTorch's tokens on 8/8 (docs/experiments.md section 6), which is
    what the README states, so that is the bar. On the random model, full of near-ties, q4 is not tested."""
    from export.parity import heldout_prompts
    from runtimes import load_runtime

    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[onnx]'")
    folder = tmp_path_factory.mktemp("tjs-trained") / "onnx"
    assert _python("export/to_onnx.py", str(TRAINED), "--outdir", str(folder)).returncode == 0
    if dtype == "q4":
        assert _python("quantize/run.py", "--format", "onnx", "--types", "q4", "--export", str(folder)).returncode == 0
    prompts = heldout_prompts(HELDOUT, N_TRAINED)
    rt = load_runtime(TRAINED, 1, fmt="pytorch")
    pytorch = {p.id: list(rt.generate(p.image, p.prompt, MAX_NEW_TOKENS).token_ids) for p in prompts}
    mismatches = _compare(_transformersjs(folder, dtype, prompts, tmp_path), TRAINED, prompts, pytorch,
                          f"{dtype}, trained default")
    assert len(prompts) - len(mismatches) >= min_identical, "\n".join(mismatches)
