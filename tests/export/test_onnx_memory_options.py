"""The ONNX memory options (docs/memory.md, "ONNX Runtime Q4"): q4's smaller token table
(quantize/run.py --embed-table, weights in external data) and the runtime's release_vision and prepack
settings, on a random tiny checkpoint.

The token table is checked against the fp32 graph row by row (int8 with a scale per row is within
half a quantization step of every weight; float16 within float16 rounding), and release_vision and
prepack off must give the same greedy answers over repeated image questions as the defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from allava.onnx_layout import variant_dir
from allava.variant import Manifest

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[onnx]'")
from tests.export.test_onnx_export import _run  # noqa: E402 - after the skip, as that module needs onnxruntime too


@pytest.fixture(scope="module")
def onnx_dir(tiny_ckpt: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx-mem") / "tiny-onnx"
    p = _run("export/to_onnx.py", str(tiny_ckpt), "--outdir", str(out), "--dtypes", "fp32")
    assert p.returncode == 0, p.stderr[-2000:]
    p = _run("quantize/run.py", "--format", "onnx", "--types", "q4", "--export", str(out))  # default: int8 table
    assert p.returncode == 0, p.stderr[-2000:]
    return out


def _embed(path: Path, ids: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_ids": ids})[0]


@pytest.mark.parametrize("table", ["int8", "float16"])
def test_small_token_table_matches_fp32_rows(onnx_dir: Path, table: str, tmp_path: Path):
    import onnx
    from onnx import numpy_helper

    from quantize.onnx_quantizer import small_token_table

    fp32 = onnx.load(str(onnx_dir / "onnx" / "embed_tokens.onnx"))
    weight = numpy_helper.to_array(fp32.graph.initializer[0])
    small = small_token_table(fp32, table)
    onnx.save(small, str(tmp_path / "e.onnx"))
    ids = np.arange(weight.shape[0], dtype=np.int64)[None]
    got = _embed(tmp_path / "e.onnx", ids)[0]
    assert got.dtype == np.float32 and got.shape == weight.shape
    if table == "int8":
        step = np.abs(weight).max(axis=1, keepdims=True) / 127
        assert np.all(np.abs(got - weight) <= step / 2 + 1e-7)
        assert not np.array_equal(got, weight)  # it really was quantized
    else:
        np.testing.assert_allclose(got, weight.astype(np.float16).astype(np.float32), rtol=0, atol=0)
    assert small.ByteSize() < fp32.ByteSize() / (3.5 if table == "int8" else 1.9)


def test_q4_variant_records_and_uses_int8_table(onnx_dir: Path):
    import json

    import onnx

    man = Manifest.read(variant_dir(onnx_dir, "Q4"))
    assert man.extra["embed_table"] == "int8"
    # every q4 graph keeps its weights in {file}_data (however small), and transformers.js is told so
    flags = json.loads((onnx_dir / "config.json").read_text())["transformers.js_config"]["use_external_data_format"]
    for graph in ("vision_encoder", "embed_tokens", "decoder_model_merged"):
        assert (onnx_dir / "onnx" / f"{graph}_q4.onnx_data").is_file(), graph
        assert flags[f"{graph}_q4.onnx"] is True, graph
    graph = onnx.load(str(onnx_dir / "onnx" / "embed_tokens_q4.onnx")).graph
    assert [n.op_type for n in graph.node] == ["Gather", "Gather", "Cast", "Mul"]
    assert {i.data_type for i in graph.initializer} == {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT}


def test_bad_embed_table_is_refused(onnx_dir: Path):
    p = _run("quantize/run.py", "--format", "onnx", "--types", "q4", "--embed-table", "int4", "--export", str(onnx_dir))
    assert p.returncode == 2 and "--embed-table" in p.stderr


def test_release_vision_no_prepack_and_chunked_prefill_same_answers_over_repeated_questions(onnx_dir: Path):
    from PIL import Image

    from runtimes.base import IMAGE_MARKER
    from runtimes.onnx_runtime import OnnxRuntime

    images = [Image.new("RGB", (96, 96), c) for c in ((200, 30, 30), (20, 180, 40))]
    prompt = f"USER: {IMAGE_MARKER}\nWhat shape is it? ASSISTANT:"
    answers = {}
    for name, settings in {"default": {}, "release": {"release_vision": True},
                           "no prepack": {"prepack": False, "release_vision": True},
                           "chunked prefill": {"prefill_chunk": 5, "cpu_mem_arena": False}}.items():
        rt = OnnxRuntime().load(variant_dir(onnx_dir, "Q4"), threads=1, **settings)
        release = settings.get("release_vision", False)
        assert (rt.vision is None) == release  # released right after loading, before the decoder loads
        answers[name] = [rt.generate(im, prompt, max_new_tokens=6, ignore_eos=True).token_ids for im in images]
        assert (rt.vision is None) == release  # and after every image
        rt.close()
    assert answers["release"] == answers["default"] == answers["no prepack"] == answers["chunked prefill"]
    assert len(answers["default"][0]) == 6


def test_chunked_prefill_scores_like_one_call(onnx_dir: Path):
    """prefill_chunk splits the prompt into decoder calls over the growing cache. With a float32 cache
    (FP32) the continuation's logits (score(), what multiple-choice accuracy reads) equal the one-call
    prefill's to float32 rounding, so positions, mask and cache are right; with Q4's float16 cache the
    prompt's keys/values are rounded to float16 between chunks, as every decode step's are: measured
    1.2% of the logit scale on this random model, same argmax."""
    from PIL import Image

    from runtimes.base import IMAGE_MARKER
    from runtimes.onnx_runtime import OnnxRuntime

    image = Image.new("RGB", (96, 96), (30, 60, 200))
    prompt = f"USER: {IMAGE_MARKER}\nWhat colour is it? ASSISTANT:"
    for precision, tol in (("FP32", 1e-5), ("Q4", 2.5e-2)):
        rows = {}
        for chunk in (0, 4, 7):
            rt = OnnxRuntime().load(variant_dir(onnx_dir, precision), threads=1, prefill_chunk=chunk)
            assert len(rt.tok.encode(prompt, with_image=True)) > 2 * 7  # several chunks, one shorter than the rest
            rows[chunk] = rt.score(image, prompt, [5, 9, 11])
            rt.close()
        assert rows[0].shape[0] == 3
        for chunk in (4, 7):
            np.testing.assert_array_equal(rows[chunk].argmax(-1), rows[0].argmax(-1))
            np.testing.assert_allclose(rows[chunk], rows[0], rtol=0, atol=tol * np.abs(rows[0]).max(), err_msg=precision)
