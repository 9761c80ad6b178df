"""quantize/run.py --format gguf: llama.cpp's quantizer makes loadable variants; bad input leaves nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import needs_llama

# 1 thread by default: on a shared 2-core machine llama.cpp's spinning thread pool stalls when oversubscribed
THREADS = int(os.environ.get("ALLAVA_TEST_THREADS", "1"))

pytestmark = needs_llama


@pytest.fixture(scope="module")
def quantized(gguf_dir: Path) -> Path:
    from quantize.run import main

    assert main(["--format", "gguf", "--types", "q8_0,q4_k_m,q4_0", "--export", str(gguf_dir)]) == 0
    return gguf_dir


@pytest.mark.parametrize("precision", ["Q8_0", "Q4_K_M", "Q4_0"])
def test_quantized_variant_loads_and_generates(quantized: Path, precision: str):
    import gguf

    from allava.variant import read_manifest
    from export.gguf_writer import read_gguf
    from export.parity import synthetic_prompts
    from runtimes import load_runtime

    v = quantized / precision
    m = read_manifest(v)
    assert m["precision"] == precision and m["mmproj_precision"] == "F16"
    assert m["quantized_from"]["precision"] == "F32"
    assert m["sizes"]["model"] < read_manifest(quantized / "F16")["sizes"]["model"]
    r = read_gguf(v / m["files"]["model"])
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.ffn_up.weight"] != gguf.GGMLQuantizationType.F32
    p = synthetic_prompts(1, 96, seed=3)[0]
    with load_runtime(v, THREADS) as rt:
        res = rt.generate(p.image, p.prompt, 8)
    assert len(res.token_ids) >= 1 and res.timings.decode_tok_s >= 0


def test_quantize_truncated_source_fails_cleanly(gguf_dir: Path, tmp_path: Path):
    from quantize.gguf_quantizer import QuantizeError, quantize_gguf

    src = tmp_path / "F16"
    shutil.copytree(gguf_dir / "F16", src)
    lm = next(src.glob("tiny-random-F16.gguf"))
    lm.write_bytes(lm.read_bytes()[: lm.stat().st_size // 2])
    with pytest.raises(QuantizeError, match="failed"):
        quantize_gguf(src, "q4_0")
    assert not (tmp_path / "Q4_0").exists(), "partial output left behind"


def test_unknown_type_is_rejected(gguf_dir: Path):
    from quantize.run import main

    assert main(["--format", "gguf", "--types", "q3_xyz", "--export", str(gguf_dir)]) == 2
