"""to_gguf: keys, tensors, tokenizer, manifest, atomic writes and clear errors on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from allava.checkpoint import CheckpointError
from allava.variant import MANIFEST, read_manifest
from export.errors import ExportError
from export.gguf_writer import read_gguf
from export.to_gguf import export_gguf

REPO = Path(__file__).resolve().parents[2]


def _field(r: gguf.GGUFReader, key: str):
    return r.fields[key].contents()


def test_files_follow_llama_cpp_names_and_manifest(gguf_dir: Path, tiny_ckpt: Path):
    for prec in ("F32", "F16"):
        v = gguf_dir / prec
        assert sorted(p.name for p in v.iterdir()) == sorted(
            [MANIFEST, f"tiny-random-{prec}.gguf", f"mmproj-tiny-random-{prec}.gguf"])
        m = read_manifest(v)
        assert m["format"] == "gguf" and m["precision"] == prec
        assert m["files"] == {"model": f"tiny-random-{prec}.gguf", "mmproj": f"mmproj-tiny-random-{prec}.gguf"}
        assert m["sizes"]["model"] == (v / m["files"]["model"]).stat().st_size
        assert m["source"]["checkpoint"] == str(tiny_ckpt.resolve()) and len(m["source"]["sha256"]) == 64
        assert not list(v.glob(".*.tmp")), "temporary files left behind"


def test_language_model_keys_and_tokenizer(gguf_dir: Path, tiny_ckpt: Path):
    r = read_gguf(gguf_dir / "F16" / "tiny-random-F16.gguf")
    cfg = json.loads((tiny_ckpt / "config.json").read_text())["text_config"]
    assert _field(r, "general.architecture") == "phi2"
    assert _field(r, "phi2.embedding_length") == cfg["hidden_size"]
    assert _field(r, "phi2.block_count") == cfg["num_hidden_layers"]
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    assert _field(r, "phi2.rope.dimension_count") == int(0.5 * head_dim)
    assert _field(r, "tokenizer.ggml.model") == "gpt2"
    assert _field(r, "tokenizer.ggml.pre") == "gpt-2"
    tokens = _field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == cfg["vocab_size"] == 1024  # padded to the embedding rows
    assert tokens[0] == "<|endoftext|>" and tokens[1] == "<image>"
    types = _field(r, "tokenizer.ggml.token_type")
    assert types[0] == gguf.TokenType.CONTROL and types[-1] == gguf.TokenType.UNUSED
    assert len(_field(r, "tokenizer.ggml.merges")) > 0
    assert _field(r, "tokenizer.ggml.bos_token_id") == 0 and _field(r, "tokenizer.ggml.eos_token_id") == 0
    assert _field(r, "tokenizer.ggml.add_bos_token") is False
    assert "ASSISTANT:" in _field(r, "tokenizer.chat_template")
    t = {x.name: x for x in r.tensors}
    assert np.all(np.asarray(t["output.bias"].data) == 0)  # Llava's lm_head has no bias; phi2 needs one
    assert t["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert t["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_mmproj_keys_and_tensors(gguf_dir: Path):
    r = read_gguf(gguf_dir / "F16" / "mmproj-tiny-random-F16.gguf")
    assert _field(r, "general.architecture") == "clip"
    assert _field(r, "clip.projector_type") == "mlp"
    assert _field(r, "clip.has_vision_encoder") is True
    assert _field(r, "clip.use_gelu") is False
    assert list(_field(r, "clip.vision.feature_layer")) == [3]  # 4 blocks, HF vision_feature_layer -2
    assert _field(r, "clip.vision.image_size") == 96 and _field(r, "clip.vision.patch_size") == 32
    names = {x.name for x in r.tensors}
    assert {"v.class_embd", "v.patch_embd.weight", "v.position_embd.weight", "v.pre_ln.weight",
            "mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"} <= names
    assert not any(n.startswith("v.post_ln") or n.startswith("mm.3") for n in names)


def test_q8_0_and_bf16_outtypes(tiny_ckpt: Path, tmp_path: Path):
    for outtype, qt in (("q8_0", gguf.GGMLQuantizationType.Q8_0), ("bf16", gguf.GGMLQuantizationType.BF16)):
        v = export_gguf(tiny_ckpt, tmp_path, outtype)
        m = read_manifest(v)
        r = read_gguf(v / m["files"]["model"])
        assert {x.name: x for x in r.tensors}["blk.0.ffn_up.weight"].tensor_type == qt
        assert m["mmproj_precision"] == "F16"


def _assert_nothing_written(out: Path):
    assert not out.exists() or not any(out.rglob("*.gguf")), "partial output left behind"
    assert not out.exists() or not any(out.rglob("*.tmp"))


def _foreign_architecture(ckpt: Path) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "qwen2_vl"
    (ckpt / "config.json").write_text(json.dumps(cfg))


def _truncated_weights(ckpt: Path) -> None:
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("damage", "match"), [
    pytest.param(_foreign_architecture, "unsupported architecture", id="unsupported_architecture"),
    pytest.param(lambda ckpt: (ckpt / "tokenizer.json").unlink(), "tokenizer", id="folder_without_tokenizer"),
    pytest.param(lambda ckpt: (ckpt / "model.safetensors").unlink(), "model.safetensors", id="missing_weights"),
    pytest.param(_truncated_weights, None, id="truncated_weights"),
])
def test_bad_checkpoint_is_rejected_and_nothing_written(tiny_ckpt: Path, tmp_path: Path, damage, match):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    damage(bad)
    with pytest.raises(CheckpointError, match=match):
        export_gguf(bad, tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_checkpoint_that_is_not_a_folder(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not a folder"):
        export_gguf(tmp_path / "does-not-exist", tmp_path / "out")


def test_truncated_and_foreign_gguf_are_rejected(gguf_dir: Path, tmp_path: Path):
    src = gguf_dir / "F16" / "tiny-random-F16.gguf"
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    with pytest.raises(ExportError, match="truncated"):
        read_gguf(trunc)
    foreign = tmp_path / "foreign.gguf"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ExportError, match="not a GGUF file"):
        read_gguf(foreign)


def test_cli_reports_clear_error(tmp_path: Path):
    p = subprocess.run([sys.executable, str(REPO / "export/to_gguf.py"), str(tmp_path), "--outdir", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "error:" in p.stderr and "config.json" in p.stderr
    assert not (tmp_path / "o").exists()


def test_relative_outdir_as_make_main_gives_it(tiny_ckpt: Path, tmp_path: Path):
    """`python export/to_gguf.py outputs/tiny --outdir outputs/exports/gguf`: paths relative to the current folder."""
    p = subprocess.run([sys.executable, str(REPO / "export/to_gguf.py"), str(tiny_ckpt), "--outdir", "exports/gguf",
                        "--outtype", "f16"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-1500:]
    m = read_manifest(tmp_path / "exports/gguf/F16")
    assert m["files"] == {"model": "tiny-random-F16.gguf", "mmproj": "mmproj-tiny-random-F16.gguf"}
