"""quantize/run.py --format gguf --imatrix: the importance matrix is made from image + text passes, read by
llama.cpp's own quantizer (it changes the weights), recorded in the manifest; a type that needs one is
refused without it; bad calibration input fails with one line and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, needs_llama

pytestmark = needs_llama
N = 4  # calibration conversations: enough to exercise every layer, fast on the tiny model


def _export_copy(gguf_dir: Path, dst: Path) -> Path:
    """A private export folder holding the session's F32 variant (the quantizer writes siblings of it)."""
    dst.mkdir(parents=True)
    shutil.copytree(gguf_dir / "F32", dst / "F32")
    return dst


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "quantize/run.py", "--format", "gguf", "--threads", "1", *args],
                          cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def imx_export(gguf_dir: Path, world_root: Path, tmp_path_factory) -> Path:
    out = _export_copy(gguf_dir, tmp_path_factory.mktemp("imx") / "gguf")
    p = _run("--types", "q4_k_m,iq3_xxs", "--export", str(out), "--imatrix", "auto", "--seed", "3",
             "--n-samples", str(N), "--calibration", str(world_root / "ALLaVA-Instruct-World.json"))
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def _lm_weights(path: Path) -> dict[str, object]:
    import gguf

    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def test_imatrix_file_made_for_every_language_model_matmul(imx_export: Path):
    import gguf

    from quantize.gguf_imatrix import read_imatrix

    f = imx_export / f"imatrix-multimodal-s3-n{N}.gguf"
    info = read_imatrix(f)
    assert info["chunk_count"] == N
    lm = _lm_weights(imx_export / "F32" / "tiny-random-F32.gguf")
    # every 2-D weight llama.cpp multiplies activations by (blocks' attention/MLP and the output head)
    matmuls = {n.removesuffix(".weight") for n, t in lm.items() if n.startswith(("blk.", "output.")) and
               n.endswith(".weight") and len(t.shape) == 2}
    assert set(info["entries"]) == {m + ".weight" for m in matmuls}
    r = gguf.GGUFReader(f)
    tensors = {t.name: t for t in r.tensors}
    for name in info["entries"]:  # one mean-square per input channel, positive, counted over tokens
        sums, counts = tensors[f"{name}.in_sum2"].data, tensors[f"{name}.counts"].data
        assert sums.size == lm[name].shape[0] and (sums > 0).all() and counts[0] > 0


def test_llama_quantize_used_it_and_manifest_records_it(imx_export: Path, gguf_dir: Path, tmp_path: Path):
    """The manifest says which file, data and seed, and how many entries llama.cpp loaded; the weights
    differ from a quantization without it (llama.cpp really weighed the rounding by it)."""
    import numpy as np

    from allava.variant import Manifest
    from quantize.gguf_imatrix import sha256

    man = Manifest.read(imx_export / "Q4_K_M")
    rec = man.extra["imatrix"]
    f = imx_export / rec["file"]
    assert (rec["kind"], rec["n_samples"], rec["seed"]) == ("multimodal", N, 3)
    assert rec["data"].endswith("ALLaVA-Instruct-World.json") and rec["sha256"] == sha256(f)
    assert rec["entries_loaded"] == rec["entries"] > 0
    assert Manifest.read(imx_export / "IQ3_XXS").extra["imatrix"]["sha256"] == rec["sha256"]

    plain = _export_copy(gguf_dir, tmp_path / "gguf")
    assert _run("--types", "q4_k_m", "--export", str(plain)).returncode == 0
    assert "imatrix" not in Manifest.read(plain / "Q4_K_M").extra
    a = _lm_weights(imx_export / "Q4_K_M" / man.files["model"])["blk.0.ffn_up.weight"]
    b = _lm_weights(plain / "Q4_K_M" / man.files["model"])["blk.0.ffn_up.weight"]
    assert a.tensor_type == b.tensor_type and not np.array_equal(a.data, b.data)


def test_text_only_imatrix_is_named_and_recorded_as_text(gguf_dir: Path, world_root: Path, tmp_path: Path):
    from allava.variant import Manifest

    out = _export_copy(gguf_dir, tmp_path / "gguf")
    p = _run("--types", "q4_0", "--export", str(out), "--imatrix", "auto", "--text-only", "--n-samples", "2",
             "--calibration", str(world_root / "ALLaVA-Instruct-World.json"))
    assert p.returncode == 0, p.stderr[-2000:]
    rec = Manifest.read(out / "Q4_0").extra["imatrix"]
    assert rec["kind"] == "text" and rec["file"] == "imatrix-text-s0-n2.gguf" and (out / rec["file"]).is_file()


def test_type_that_needs_an_imatrix_is_refused_without_one(gguf_dir: Path, tmp_path: Path):
    out = _export_copy(gguf_dir, tmp_path / "gguf")
    p = _run("--types", "q4_0,iq3_xxs", "--export", str(out))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and lines[-1].startswith("error: IQ3_XXS needs an importance matrix"), p.stderr
    assert "--imatrix auto" in lines[-1]
    assert sorted(x.name for x in out.iterdir()) == ["F32"]  # refused before anything was written


@pytest.mark.parametrize("case", ["missing-images", "empty-file", "missing-file"])
def test_bad_calibration_input_one_line_nothing_written(case: str, gguf_dir: Path, world_root: Path, tmp_path: Path):
    out = _export_copy(gguf_dir, tmp_path / "gguf")
    data = tmp_path / "cal" / "calib.json"
    data.parent.mkdir()
    if case == "missing-images":  # the records' images are relative to --images, which lacks them
        shutil.copyfile(world_root / "ALLaVA-Instruct-World.json", data)
    elif case == "empty-file":
        data.write_text("")
    p = _run("--types", "q4_k_m", "--export", str(out), "--imatrix", "auto", "--n-samples", "2",
             "--calibration", str(data))
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and err[-1].startswith("error: ") and str(data) in err[-1], p.stderr[-2000:]
    expected = {"missing-images": "not found", "empty-file": "not ALLaVA-4V", "missing-file": "not found"}[case]
    assert expected in err[-1]
    assert sorted(x.name for x in out.iterdir()) == ["F32"]  # no imatrix, no variant, no temporary file


def test_imatrix_file_option_checked(gguf_dir: Path, tmp_path: Path):
    out = _export_copy(gguf_dir, tmp_path / "gguf")
    p = _run("--types", "q4_k_m", "--export", str(out), "--imatrix", str(tmp_path / "nope.gguf"))
    assert p.returncode == 2 and "nope.gguf: imatrix file not found" in p.stderr
    assert json.loads((out / "F32" / "manifest.json").read_text())["precision"] == "F32"
    assert sorted(x.name for x in out.iterdir()) == ["F32"]
