"""llama.cpp memory cuts on the random tiny checkpoint: the context sized to the need of the run, a
q8_0 KV cache, and the engine's own statement of its buffers (runtimes/llamacpp_runtime.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtimes.llamacpp_settings import EngineSettingsError, LlamaCppSettings
from tests.conftest import needs_llama


def _prompt():
    from export.parity import synthetic_prompts

    return synthetic_prompts(1, 96, seed=5)[0]


def _open(gguf_dir: Path, **settings):
    from runtimes import load_runtime

    return load_runtime(gguf_dir / "F16", 2, settings=settings)


def test_kv_type_settings_are_checked():
    assert LlamaCppSettings.from_mapping({"type_k": "q8_0", "type_v": "q8_0"}).type_k == "q8_0"
    with pytest.raises(EngineSettingsError, match="type_k must be one of"):
        LlamaCppSettings.from_mapping({"type_k": "q9"})
    s = LlamaCppSettings()
    # a repacked copy must not sit beside the mapped file it was read from: no mmap when repacking
    assert s.mmap_for(True, "Q4_0") is False and s.mmap_for(False, "Q4_K_M") is True and s.mmap_for(True, "F16")
    assert LlamaCppSettings.from_mapping({"mmap": True}).mmap_for(True, "Q4_0") is True
    with pytest.raises(EngineSettingsError, match="mmap must be true, false"):
        LlamaCppSettings.from_mapping({"mmap": "yes"})
    assert s.auto_ctx(300, 256, 2048) == 512 and s.auto_ctx(100, 256, 2048) == 256 and s.auto_ctx(5000, 256, 2048) == 2048


@needs_llama
def test_context_sized_to_the_need_keeps_greedy_tokens(gguf_dir):
    p = _prompt()
    fixed = _open(gguf_dir, n_ctx=1024)
    ref = fixed.generate(p.image, p.prompt, 300, ignore_eos=True).token_ids
    fixed_kv = fixed.engine_memory()["components_mib"]["kv_cache"]
    fixed.close()
    rt = _open(gguf_dir)
    assert rt.n_ctx == 256 and rt.settings["n_ctx_policy"] == "sized to the need of the run"
    short = rt.generate(p.image, p.prompt, 8, ignore_eos=True)
    assert rt.n_ctx == 256 and short.token_ids == ref[:8]
    long = rt.generate(p.image, p.prompt, 300, ignore_eos=True)  # needs the prompt + 300 positions: grows once
    need = long.timings.n_prompt_tokens + 300
    assert need <= rt.n_ctx < need + 256 and rt.n_ctx % 256 == 0 and rt.settings["n_ctx"] == rt.n_ctx
    assert long.token_ids == ref  # same answers as the fixed context
    mem = rt.engine_memory()["components_mib"]
    assert 0 < mem["kv_cache"] < fixed_kv  # the statement follows the context it now has
    rt.close()


@needs_llama
def test_engine_memory_statement(gguf_dir):
    rt = _open(gguf_dir)
    mem = rt.engine_memory()
    parts = mem["components_mib"]
    lm_file = Path(mem["files"][0]).stat().st_size / 2**20
    assert abs(parts["lm_weights_mapped"] - lm_file) < 0.05 * lm_file + 0.1  # F16 LM mapped in place
    assert parts["vision_weights"] > 0 and parts["lm_compute"] > 0
    # f16 K and V: 2 bytes x n_ctx x n_embd x n_layer each
    import json

    cfg = json.loads((Path(mem["files"][0]).parent / "manifest.json").read_text())
    assert cfg["format"] == "gguf"
    rt.close()


@needs_llama
def test_q8_0_kv_cache_runs_and_keeps_the_answers(gguf_dir):
    p = _prompt()
    base = _open(gguf_dir)
    q8 = _open(gguf_dir, type_k="q8_0", type_v="q8_0")
    ids = base.generate(p.image, p.prompt, 16).token_ids
    assert q8.settings["type_k"] == "q8_0"
    cont = ids[:16]
    a, b = base.score(p.image, p.prompt, cont), q8.score(p.image, p.prompt, cont)
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.9  # teacher-forced top-1 kept
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
    assert q8.engine_memory()["components_mib"]["kv_cache"] < 0.6 * base.engine_memory()["components_mib"]["kv_cache"]
    base.close()
    q8.close()


@needs_llama
def test_quantized_v_without_flash_attention_names_the_reason(gguf_dir):
    from runtimes.llamacpp_runtime import LlamaCppError

    with pytest.raises(LlamaCppError, match="type_v q8_0.*flash_attn off.*requires flash_attn"):
        _open(gguf_dir, type_v="q8_0", flash_attn="off")
