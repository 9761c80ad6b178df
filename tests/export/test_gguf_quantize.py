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

    assert main(["--format", "gguf", "--types", "q8_0,q5_k_m,q4_k_m,q4_0", "--export", str(gguf_dir)]) == 0
    return gguf_dir


@pytest.mark.parametrize("precision", ["Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0"])  # every type scripts/main.sh makes
def test_quantized_variant_loads_and_generates(quantized: Path, precision: str):
    """Loads, generates 8 tokens with consistent timings, and its greedy tokens are its own teacher-forced
    argmax (generate and score agree inside the quantized model: a broken KV cache or decode path would not)."""
    import gguf
    import numpy as np

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
        res = rt.generate(p.image, p.prompt, 8, ignore_eos=True)
        logits = rt.score(p.image, p.prompt, res.token_ids)
    t = res.timings
    assert len(res.token_ids) == 8 == t.n_generated, (res.token_ids, t)
    assert t.n_prompt_tokens > 9 and t.ttft_ms > 0 and t.prefill_tok_s > 0 and t.decode_tok_s > 0, t
    top2 = np.sort(logits, axis=-1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] >= 5e-3  # near-ties may go either way between two code paths
    assert decided.any(), top2  # something to compare
    assert (logits.argmax(-1) == np.array(res.token_ids))[decided].all(), (logits.argmax(-1), res.token_ids)


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
