"""GGUF variants whose vision projector (mmproj) is Q8_0: a precision of the format table ("Q4_0-VQ8_0"),
made by llama.cpp's quantizer plus the export stage's Q8_0 projector, self-describing, and close to F16's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs_llama

pytestmark = needs_llama


def test_precision_names_split():
    from allava.formats import get_format, split_gguf_precision

    assert split_gguf_precision("Q4_K_M-VQ8_0") == ("Q4_K_M", "Q8_0")
    assert split_gguf_precision("q4_0") == ("Q4_0", None)
    names = {p.name for p in get_format("gguf").made_by("quantize")}
    assert {"Q4_0-VQ8_0", "Q4_K_M-VQ8_0", "Q8_0-VQ8_0"} <= names


@pytest.fixture(scope="module")
def vision_q8(gguf_dir: Path) -> Path:
    from quantize.run import main

    assert main(["--format", "gguf", "--types", "q4_0,q4_0-vq8_0", "--export", str(gguf_dir)]) == 0
    return gguf_dir


def test_vision_q8_variant_describes_itself(vision_q8: Path):
    import gguf

    from allava.variant import read_manifest
    from export.gguf_writer import read_gguf

    m = read_manifest(vision_q8 / "Q4_0-VQ8_0")
    assert (m["precision"], m["mmproj_precision"]) == ("Q4_0-VQ8_0", "Q8_0")
    lm = {t.name: t.tensor_type for t in read_gguf(vision_q8 / "Q4_0-VQ8_0" / m["files"]["model"]).tensors}
    assert lm["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q4_0
    mm = {t.name: t.tensor_type for t in read_gguf(vision_q8 / "Q4_0-VQ8_0" / m["files"]["mmproj"]).tensors}
    assert mm["v.blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert mm["mm.0.weight"] == gguf.GGMLQuantizationType.Q8_0
    f16 = read_manifest(vision_q8 / "Q4_0")
    assert f16["mmproj_precision"] == "F16" and m["sizes"]["mmproj"] < f16["sizes"]["mmproj"]


def test_vision_q8_image_embeddings_close_to_f16(vision_q8: Path):
    """Same language model, projector Q8_0 vs F16: the image embeddings llama.cpp hands the LM agree."""
    from export.parity import synthetic_prompts
    from runtimes import load_runtime

    p = synthetic_prompts(1, 96, seed=5)[0]
    emb = {}
    for name in ("Q4_0", "Q4_0-VQ8_0"):
        with load_runtime(vision_q8 / name, 1) as rt:
            emb[name] = rt.image_embeddings(p.image)
    ref, q8 = emb["Q4_0"], emb["Q4_0-VQ8_0"]
    rel = np.linalg.norm(q8 - ref) / np.linalg.norm(ref)
    assert ref.shape == q8.shape and 0 < rel < 0.02, rel
