"""The decoder's lean interface (allava/onnx_decoder_io.py): num_logits_to_keep and the float16 KV cache.

Checked on a random tiny checkpoint's export, against the graph's own full output: keeping N logits must
give exactly the last N rows of keeping all (0), and a float16 cache must give the float32 cache's
next tokens over a prefill and several decode steps. The variants' interfaces are what transformers.js
reads (tests/export/test_onnx_transformersjs.py runs its generate on them).
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
    out = tmp_path_factory.mktemp("onnx-io") / "tiny-onnx"
    p = _run("export/to_onnx.py", str(tiny_ckpt), "--outdir", str(out), "--dtypes", "fp32")
    assert p.returncode == 0, p.stderr[-2000:]
    p = _run("quantize/run.py", "--format", "onnx", "--types", "int8,q4", "--export", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    return out


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(sess, embeds: np.ndarray, past: dict[str, np.ndarray], n_past: int, keep: int | None) -> dict:
    q = embeds.shape[1]
    feeds = {"inputs_embeds": embeds, "attention_mask": np.ones((1, n_past + q), np.int64),
             "position_ids": np.arange(n_past, n_past + q, dtype=np.int64)[None], **past}
    if keep is not None:
        feeds["num_logits_to_keep"] = np.asarray(keep, np.int64)
    return feeds


def _empty_past(sess) -> dict[str, np.ndarray]:
    dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    return {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), dtype[i.type])
            for i in sess.get_inputs() if i.name.startswith("past_key_values.")}


def test_keep_gives_the_last_rows_of_all(onnx_dir: Path):
    sess = _session(onnx_dir / "onnx" / "decoder_model_merged.onnx")
    names = [i.name for i in sess.get_inputs()]
    assert "num_logits_to_keep" in names
    hidden = sess.get_inputs()[0].shape[2]
    embeds = np.random.default_rng(0).standard_normal((1, 7, hidden)).astype(np.float32)
    past = _empty_past(sess)
    full = sess.run(["logits"], _feeds(sess, embeds, past, 0, 0))[0]
    assert full.shape[:2] == (1, 7)
    for keep, rows in ((1, 1), (3, 3), (7, 7), (100, 7)):
        got = sess.run(["logits"], _feeds(sess, embeds, past, 0, keep))[0]
        assert got.shape[1] == rows, keep
        np.testing.assert_allclose(got, full[:, -rows:], rtol=0, atol=1e-5)


def test_variants_record_their_kv_cache(onnx_dir: Path):
    expect = {"INT8": "tensor(float16)", "Q4": "tensor(float16)"}
    suffix = {"INT8": "_quantized", "Q4": "_q4"}
    for precision, kv_type in expect.items():
        sess = _session(onnx_dir / "onnx" / f"decoder_model_merged{suffix[precision]}.onnx")
        past = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
        present = [o for o in sess.get_outputs() if o.name.startswith("present.")]
        assert {i.type for i in past} == {kv_type} and {o.type for o in present} == {kv_type}, precision
        assert "num_logits_to_keep" in [i.name for i in sess.get_inputs()]
        assert sess.get_outputs()[0].type == "tensor(float)"  # logits stay float32
        assert Manifest.read(variant_dir(onnx_dir, precision)).extra["kv_cache"] == "float16"


def test_float16_cache_gives_the_float32_cache_tokens(onnx_dir: Path, tmp_path: Path):
    """The fp32 decoder with and without the float16-cache rewrite: a prefill of 9 positions, then 6 steps
    feeding back each graph's own present cache; same argmax every step, logits within float16 rounding."""
    import onnx

    from allava.onnx_decoder_io import set_kv_cache_dtype

    src = onnx_dir / "onnx" / "decoder_model_merged.onnx"
    half = set_kv_cache_dtype(onnx.load(str(src)), "float16")
    onnx.save(half, str(tmp_path / "half.onnx"))
    runs = {}
    for name, path in (("float32", src), ("float16", tmp_path / "half.onnx")):
        sess = _session(path)
        hidden = sess.get_inputs()[0].shape[2]
        rng = np.random.default_rng(1)
        embeds = rng.standard_normal((1, 9, hidden)).astype(np.float32)
        past, n_past, rows = _empty_past(sess), 0, []
        out_names = [o.name for o in sess.get_outputs()]
        for _step in range(7):
            logits, *present = sess.run(None, _feeds(sess, embeds, past, n_past, 1))
            rows.append(logits[0, -1])
            n_past += embeds.shape[1]
            past = {n.replace("present.", "past_key_values."): t for n, t in zip(out_names[1:], present, strict=True)}
            embeds = rng.standard_normal((1, 1, hidden)).astype(np.float32)
        assert next(iter(past.values())).dtype == (np.float16 if name == "float16" else np.float32)
        runs[name] = np.stack(rows)
    assert np.array_equal(runs["float32"].argmax(-1), runs["float16"].argmax(-1))
    np.testing.assert_allclose(runs["float16"], runs["float32"], rtol=0, atol=5e-3 * np.abs(runs["float32"]).max())


def test_rewrites_are_idempotent(onnx_dir: Path):
    import onnx

    from allava.onnx_decoder_io import lean_decoder

    model = onnx.load(str(onnx_dir / "onnx" / "decoder_model_merged_q4.onnx"), load_external_data=False)
    before = model.SerializeToString()
    assert lean_decoder(model, "float16").SerializeToString() == before


def test_a_graph_without_a_cache_is_refused_with_one_line(onnx_dir: Path):
    import onnx

    from allava.onnx_decoder_io import DecoderIOError, lean_decoder

    embed = onnx.load(str(onnx_dir / "onnx" / "embed_tokens.onnx"))
    with pytest.raises(DecoderIOError, match="no LayerNormalization|no past_key_values"):
        lean_decoder(embed, "float16")
