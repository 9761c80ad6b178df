"""ONNX: export/to_onnx.py, quantize/run.py --format onnx and the ONNX Runtime runtime against PyTorch.

On a random tiny checkpoint: the folder layout transformers.js expects, one manifest per precision,
the processor Python transformers opens, fp32 graphs equal to PyTorch (greedy tokens identical,
logits within 1e-4), every precision loading and generating, and clear errors on bad input. On the
trained default (outputs/tiny): the acceptance figures: fp32 greedy tokens identical to PyTorch on
50 held-out image prompts, and the held-out exact-match deltas of fp16 / int8 / q4 within 1 / 1 / 3
points on ALLAVA_HELDOUT_LIMIT (200) questions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from allava.onnx_layout import GRAPHS, SUFFIX, variant_dir
from allava.variant import Manifest
from tests.conftest import HELDOUT, REPO, TRAINED, needs_trained

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[onnx]'")
THREADS = int(os.environ.get("ALLAVA_TEST_THREADS", "1"))
PRECISIONS = ("FP32", "FP16", "INT8", "Q4", "Q4F16")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def onnx_dir(tiny_ckpt: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    p = _run("export/to_onnx.py", str(tiny_ckpt), "--outdir", str(out), "--dtypes", "fp32,fp16")
    assert p.returncode == 0, p.stderr[-2000:]
    p = _run("quantize/run.py", "--format", "onnx", "--types", "int8,q4,q4f16", "--export", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    return out


def test_layout_manifests_and_processor(onnx_dir: Path, tiny_ckpt: Path):
    from PIL import Image
    from transformers import AutoProcessor

    for prec in PRECISIONS:
        for graph in GRAPHS:
            assert (onnx_dir / "onnx" / f"{graph}{SUFFIX[prec]}.onnx").is_file(), (prec, graph)
        man = Manifest.read(variant_dir(onnx_dir, prec))
        assert man.format == "onnx" and man.precision == prec and man.source["checkpoint"] == str(tiny_ckpt.resolve())
        assert all(p.is_file() for p in man.paths(variant_dir(onnx_dir, prec)))
        assert man.sizes["total"] == sum(p.stat().st_size for p in man.paths(variant_dir(onnx_dir, prec)))
    sizes = {p: Manifest.read(variant_dir(onnx_dir, p)).lm_bytes for p in PRECISIONS}
    assert sizes["FP32"] > sizes["FP16"] > sizes["INT8"] > sizes["Q4"]
    cfg = json.loads((onnx_dir / "config.json").read_text())
    assert cfg["model_type"] == "llava" and cfg["image_token_index"] == json.loads((tiny_ckpt / "config.json").read_text())["image_token_index"]
    image = Image.new("RGB", (96, 96), (200, 30, 30))
    text = "USER: <image>\nWhat colour?\nASSISTANT:"
    ours = AutoProcessor.from_pretrained(onnx_dir)(images=image, text=text)["input_ids"]
    assert ours == AutoProcessor.from_pretrained(tiny_ckpt)(images=image, text=text)["input_ids"]


def test_fp32_equals_pytorch_and_lower_precisions_run(onnx_dir: Path, tiny_ckpt: Path):
    from export.parity import reference_results, run_parity, synthetic_prompts
    from runtimes import load_runtime

    prompts = synthetic_prompts(12, 96, seed=5)
    refs = reference_results(load_runtime(tiny_ckpt, THREADS, fmt="pytorch"), prompts, 24, progress=False)
    for prec in PRECISIONS:
        with load_runtime(variant_dir(onnx_dir, prec), THREADS) as rt:
            s = run_parity(None, rt, prompts, 24, 5e-3, progress=False, refs=refs)["summary"]
        print(prec, s)
        if prec == "FP32":
            assert s["greedy_exact_rate"] == 1.0 and s["tf_top1_agreement"] == 1.0, s
            assert s["first_logits_max_abs"] < 1e-4 and s["image_embd_max_abs"] < 1e-4, s
        elif prec == "FP16":
            assert s["tf_top1_agreement"] >= 0.95 and s["first_logits_max_abs"] < 5e-2, s
        else:  # a random model has many near-ties; quantized variants must still load and answer
            assert s["n_prompts"] == 12 and s["tf_top1_agreement"] > 0.5, s


def test_bad_input_is_one_clear_line(tiny_ckpt: Path, onnx_dir: Path, tmp_path: Path):
    nocfg = tmp_path / "nocfg"
    shutil.copytree(tiny_ckpt, nocfg)
    (nocfg / "config.json").unlink()
    noweights = tmp_path / "noweights"
    shutil.copytree(tiny_ckpt, noweights)
    (noweights / "model.safetensors").unlink()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    cases = [
        (("export/to_onnx.py", str(nocfg), "--outdir", str(tmp_path / "o1")), "missing config.json"),
        (("export/to_onnx.py", str(noweights), "--outdir", str(tmp_path / "o2")), "no model.safetensors"),
        (("export/to_onnx.py", str(tiny_ckpt), "--outdir", str(tmp_path / "o3"), "--dtypes", "fp32,int3"),
         "unknown --dtypes int3"),
        (("export/to_onnx.py", str(tiny_ckpt), "--outdir", str(other)), "exists with other content"),
        (("quantize/run.py", "--format", "onnx", "--types", "q3", "--export", str(onnx_dir)), "unknown ONNX type 'q3'"),
        (("quantize/run.py", "--format", "onnx", "--types", "q4", "--export", str(other)), "no FP32 ONNX variant"),
    ]
    for args, message in cases:
        p = _run(*args)
        assert p.returncode == 2, (args, p.stderr[-1500:])
        errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (args, p.stderr[-1500:])
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]  # nothing written into someone else's folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind

    copy = tmp_path / "copy"
    shutil.copytree(onnx_dir, copy)
    dec = copy / "onnx" / "decoder_model_merged.onnx"
    data = dec.read_bytes()
    dec.write_bytes(data[: len(data) // 3])
    p = _run("export/check.py", str(tiny_ckpt), str(variant_dir(copy, "FP32")), "-n", "2", "--no-save")
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1, p.stderr[-1500:]
    assert str(dec.name) in errors[0] and "expected an ONNX graph" in errors[0]


def test_quantizers_read_external_weights_one_at_a_time(onnx_dir: Path, tmp_path: Path):
    """Full-size graphs keep their weights in {file}_data; the quantizers read them lazily (a 10.6 GB
    decoder does not fit in memory three times). Same weights, same quantized graphs, same answers."""
    import onnx

    from export.parity import synthetic_prompts
    from runtimes import load_runtime

    ext = tmp_path / "external"
    shutil.copytree(onnx_dir, ext, ignore=shutil.ignore_patterns("*_q4*", "*_quantized*", "INT8", "Q4", "Q4F16"))
    for graph in GRAPHS:
        path = ext / "onnx" / f"{graph}.onnx"
        onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + "_data", size_threshold=0)
    p = subprocess.run([sys.executable, str(REPO / "quantize/run.py"), "--format", "onnx", "--types", "int8,q4",
                        "--export", "external"], cwd=tmp_path, capture_output=True, text=True)  # a relative path, as in make main
    assert p.returncode == 0, p.stderr[-2000:]
    prompt = synthetic_prompts(1, 96, seed=2)[0]
    for prec in ("INT8", "Q4"):
        assert Manifest.read(variant_dir(ext, prec)).lm_bytes > 0
        with load_runtime(variant_dir(ext, prec), THREADS) as a, load_runtime(variant_dir(onnx_dir, prec), THREADS) as b:
            assert a.score(prompt.image, prompt.prompt, [5, 6, 7]).tolist() == b.score(prompt.image, prompt.prompt, [5, 6, 7]).tolist()


@pytest.mark.slow
def test_reexport_replaces_an_export_of_another_checkpoint(tiny_ckpt: Path, tmp_path: Path):
    from allava.modeling import save_random_checkpoint

    other = save_random_checkpoint(tmp_path / "seed1", seed=1)
    out = tmp_path / "onnx"
    assert _run("export/to_onnx.py", str(tiny_ckpt), "--outdir", str(out)).returncode == 0
    assert _run("quantize/run.py", "--format", "onnx", "--types", "q4", "--export", str(out)).returncode == 0
    p = _run("export/to_onnx.py", str(other), "--outdir", str(out))
    assert p.returncode == 0, p.stderr[-1500:]
    assert sorted(d.name for d in (out / "variants").iterdir()) == ["FP32"]  # the stale Q4 went with the old export
    assert Manifest.read(variant_dir(out, "FP32")).source["checkpoint"] == str(other.resolve())
    assert not (out / "onnx" / "decoder_model_merged_q4.onnx").exists()


# -- the acceptance figures on the trained default ----------------------------------------------------

@pytest.fixture(scope="module")
def trained_onnx(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained-onnx") / "onnx"
    assert _run("export/to_onnx.py", str(TRAINED), "--outdir", str(out), "--dtypes", "fp32,fp16").returncode == 0
    assert _run("quantize/run.py", "--format", "onnx", "--types", "int8,q4", "--export", str(out)).returncode == 0
    return out


@pytest.mark.slow
@needs_trained
def test_trained_fp32_greedy_identical_on_50_heldout_prompts(trained_onnx: Path):
    from export.parity import heldout_prompts, run_parity
    from runtimes import load_runtime

    prompts = heldout_prompts(HELDOUT, 50)
    ref = load_runtime(TRAINED, THREADS, fmt="pytorch")
    with load_runtime(variant_dir(trained_onnx, "FP32"), THREADS) as rt:
        s = run_parity(ref, rt, prompts, 32, 5e-3, progress=False)["summary"]
    print("trained FP32 ONNX:", s)
    assert s["n_prompts"] == 50 and s["greedy_exact_rate"] == 1.0, s
    assert s["image_embd_max_abs"] < 1e-3 and s["first_logits_max_abs"] < 1e-3, s


@pytest.fixture(scope="module")
def heldout_base():
    """(items, PyTorch's held-out exact match on them), computed once for every precision."""
    from allava.evaluate import load_heldout
    from export.parity import heldout_accuracy
    from runtimes import load_runtime

    items = load_heldout(HELDOUT, limit=int(os.environ.get("ALLAVA_HELDOUT_LIMIT", "200")))
    return items, heldout_accuracy(load_runtime(TRAINED, THREADS, fmt="pytorch"), items, progress=False)["exact_match"]


@pytest.mark.slow
@needs_trained
@pytest.mark.parametrize("precision,max_drop", [("FP16", 1.0), ("INT8", 1.0), ("Q4", 3.0)])
def test_trained_heldout_accuracy_of_lower_precisions(trained_onnx: Path, heldout_base, precision: str, max_drop: float):
    from export.parity import heldout_accuracy
    from runtimes import load_runtime

    items, base = heldout_base
    with load_runtime(variant_dir(trained_onnx, precision), THREADS) as rt:
        got = heldout_accuracy(rt, items, progress=False)["exact_match"]
    print(f"ONNX {precision}: {got:.1f} vs PyTorch {base:.1f} ({got - base:+.1f} points)")
    assert got >= base - max_drop
