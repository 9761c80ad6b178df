"""One runtime interface: PyTorch reference and llama.cpp give ids, text and timings the same way."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs_llama

# 1 thread by default: on a shared 2-core machine llama.cpp's spinning thread pool stalls when oversubscribed
THREADS = int(os.environ.get("ALLAVA_TEST_THREADS", "1"))



def _prompt():
    from export.parity import synthetic_prompts

    return synthetic_prompts(1, 96, seed=7)[0]


def test_format_detection_reads_the_manifest_only(tiny_ckpt: Path, gguf_dir: Path):
    from allava.formats import UnknownFormatError
    from runtimes import detect_format, load_runtime, runtime_class
    from runtimes.torch_runtime import TorchRuntime

    assert detect_format(gguf_dir / "F16") == "gguf"
    assert runtime_class("pytorch") is TorchRuntime
    with pytest.raises(UnknownFormatError, match="unknown format 'tflite'; known: .*gguf.*pytorch"):
        runtime_class("tflite")
    with pytest.raises(FileNotFoundError, match="not an export variant"):
        detect_format(gguf_dir)
    # a transformers folder is not guessed to be the reference (a GPTQ folder has a config.json too)
    with pytest.raises(FileNotFoundError, match="without a variant manifest.*fmt='pytorch'"):
        load_runtime(tiny_ckpt)
    assert load_runtime(tiny_ckpt, 1, fmt="pytorch").format == "pytorch"


def test_torch_runtime_equals_hf_generate(tiny_ckpt: Path):
    import torch

    from runtimes.torch_runtime import TorchRuntime

    p = _prompt()
    rt = TorchRuntime().load(tiny_ckpt, THREADS)
    res = rt.generate(p.image, p.prompt, 12)
    inputs = rt.processor(images=p.image, text=p.prompt, return_tensors="pt")
    with torch.inference_mode():
        out = rt.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    hf = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert res.token_ids == hf[: len(res.token_ids)]
    logits = rt.score(p.image, p.prompt, res.token_ids)
    assert logits.shape == (len(res.token_ids), 1024)
    assert logits.argmax(-1).tolist() == res.token_ids
    assert rt.image_embeddings(p.image).shape == (rt.model.config.image_seq_length, 256)


def _check_timings(t):
    assert t.load_s > 0 and t.image_encode_ms > 0 and t.ttft_ms > 0
    assert t.prefill_tok_s > 0 and t.peak_rss_mb > 0 and t.n_prompt_tokens > 9


@needs_llama
def test_llamacpp_runtime_interface(tiny_ckpt: Path, gguf_dir: Path):
    from runtimes import load_runtime
    from runtimes.llamacpp_runtime import LlamaCppRuntime

    p = _prompt()
    ref = load_runtime(tiny_ckpt, THREADS, fmt="pytorch")
    with load_runtime(gguf_dir / "F32", threads=1) as rt:
        assert rt.threads == 1
        res = rt.generate(p.image, p.prompt, 12)
        _check_timings(res.timings)
        r = ref.generate(p.image, p.prompt, 12)
        _check_timings(r.timings)
        assert res.timings.n_prompt_tokens == r.timings.n_prompt_tokens  # same token stream, image included
        assert rt.prompt_token_ids("\nWhat colour is the circle?\nASSISTANT:") == \
            ref.tokenizer("\nWhat colour is the circle?\nASSISTANT:")["input_ids"]
        logits = rt.score(p.image, p.prompt, res.token_ids)
        assert logits.shape[0] == len(res.token_ids)
        np.testing.assert_allclose(rt.first_token_logits(p.image, p.prompt), logits[0], atol=1e-4)
        emb = rt.image_embeddings(p.image)
        ref_emb = ref.image_embeddings(p.image)
        assert emb.shape == ref_emb.shape
        if LlamaCppRuntime.build_info()["patched"]:
            assert np.abs(emb - ref_emb).max() < 5e-3


@needs_llama
def test_llamacpp_rejects_bad_files(gguf_dir: Path, tmp_path: Path):
    import shutil

    from runtimes.llamacpp_runtime import LlamaCppError, LlamaCppRuntime

    v = tmp_path / "v"
    shutil.copytree(gguf_dir / "F16", v)
    lm = v / "tiny-random-F16.gguf"
    lm.write_bytes(lm.read_bytes()[:4096])
    with pytest.raises(LlamaCppError, match="could not load"):
        LlamaCppRuntime().load(v, 1)
    lm.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(LlamaCppError, match="not a GGUF"):
        LlamaCppRuntime().load(v, 1)


def test_patch_marker_status():
    from runtimes.llamacpp_patch import status

    st = status()
    if not st["installed"]:
        pytest.skip("llama_cpp is not installed")
    assert st["patched"], "installed llama-cpp-python lacks the CLS-order patch: run scripts/build_llama_cpp.sh"
    assert "0001-llava-cls-before-patches.patch" in st["patches"]


def test_patch_marker_records_build_flags(tmp_path):
    """A build made with other CMake flags (e.g. an AMX-enabled native build) is not taken as ours."""
    from runtimes.llamacpp_patch import main, write_marker

    pkg = tmp_path / "llama_cpp"
    (pkg / "lib").mkdir(parents=True)
    (pkg / "lib" / "libmtmd.so").write_bytes(b"built library")
    write_marker(str(tmp_path), ["0001-x.patch"], "-DGGML_NATIVE=OFF")
    site = ["--site", str(tmp_path), "--patches", "0001-x.patch"]
    assert main(["check", *site, "--build=-DGGML_NATIVE=OFF"]) == 0
    assert main(["check", *site, "--build=-DGGML_NATIVE=ON"]) == 1
    assert main(["check", *site]) == 0  # no flags asked for: patches only
    (pkg / "lib" / "libmtmd.so").write_bytes(b"a stock reinstall")
    assert main(["check", *site, "--build=-DGGML_NATIVE=OFF"]) == 1


@needs_llama
def test_native_decode_loop_equals_python_loop(gguf_dir: Path, tmp_path: Path, monkeypatch):
    """The C greedy loop makes the same llama.cpp calls as the Python one: identical tokens."""
    from runtimes import native_loop
    from runtimes.llamacpp_runtime import LlamaCppRuntime

    monkeypatch.setenv("ALLAVA_CACHE_DIR", str(tmp_path / "cache"))
    built = native_loop.build()
    assert built.is_file() and built.parent == tmp_path / "cache" and native_loop.build() == built
    assert not list(built.parent.glob("*.tmp"))  # compiled to a temporary name, then renamed
    p = _prompt()
    rt = LlamaCppRuntime().load(gguf_dir / "F32", threads=1)
    try:
        assert rt.decode_loop == "native"
        logits, n_past, _ = rt._prefill(p.image, p.prompt)
        first = int(np.argmax(logits))
        native = rt._decode_loop_native(first, n_past, 24)
        rt._prefill(p.image, p.prompt)
        python = rt._decode_loop_python(first, n_past, 24)
        assert native == python and len(native) > 1
        assert rt._decode_loop_native(first, n_past, 1) == [first]  # max 1 token: only the prefill's
        assert rt.generate(p.image, p.prompt, 24).token_ids == native
        # ignore_eos (latency runs): exactly N tokens from both loops, the normal answer as prefix
        rt._prefill(p.image, p.prompt)
        fixed = rt._decode_loop_native(first, n_past, 40, ignore_eos=True)
        rt._prefill(p.image, p.prompt)
        assert rt._decode_loop_python(first, n_past, 40, ignore_eos=True) == fixed
        normal = rt.generate(p.image, p.prompt, 40).token_ids
        assert len(fixed) == 40 and fixed[:len(normal)] == normal
        g = rt.generate(p.image, p.prompt, 40, ignore_eos=True)
        assert g.token_ids == fixed and g.timings.n_generated == 40
    finally:
        rt.close()


def test_torch_runtime_ignore_eos_generates_exactly_n(tiny_ckpt: Path):
    from runtimes.torch_runtime import TorchRuntime

    p = _prompt()
    rt = TorchRuntime().load(tiny_ckpt, threads=1)
    normal = rt.generate(p.image, p.prompt, 20).token_ids
    fixed = rt.generate(p.image, p.prompt, 20, ignore_eos=True)
    assert len(fixed.token_ids) == 20 and fixed.token_ids[:len(normal)] == normal
    assert fixed.timings.n_generated == 20
