"""Engine settings: named, validated, taken from the profile with a per-run override, recorded with results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.harness.profiles import ProfileError, load_profile
from bench.run import parse_engine
from runtimes.llamacpp_settings import EngineSettingsError, LlamaCppSettings


def test_llamacpp_settings_defaults_and_overrides():
    s = LlamaCppSettings.from_mapping({"n_ubatch": 512, "flash_attn": "off", "repack": False})
    assert (s.n_ubatch, s.flash_attn, s.repack, s.clip_flash_attn) == (512, "off", False, "auto")
    assert LlamaCppSettings.from_mapping(None) == LlamaCppSettings()
    auto = LlamaCppSettings()
    assert auto.repack_for("Q4_0") and auto.repack_for("Q4_0-VQ8_0") and not auto.repack_for("Q4_K_M-VQ8_0")
    assert LlamaCppSettings(repack=True).repack_for("Q4_K_M")


@pytest.mark.parametrize(("data", "match"), [
    ({"n_ubach": 512}, r"unknown setting\(s\) \['n_ubach'\]"),
    ({"flash_attn": "yes"}, "flash_attn must be one of"),
    ({"n_ubatch": 0}, "n_ubatch must be a positive integer"),
    ({"n_ctx": "1024"}, "n_ctx must be a positive integer"),
    ({"repack": 1}, "repack must be true, false or"),
])
def test_llamacpp_settings_reject_bad_values_naming_the_key(data, match):
    with pytest.raises(EngineSettingsError, match=match):
        LlamaCppSettings.from_mapping(data, where="profile.json engine.gguf")


def test_profile_engine_object(tmp_path: Path):
    base = {"threads": 2, "memory_budget_gib": 4, "allowed_variants": ["gguf:*"]}
    good = tmp_path / "good.json"
    good.write_text(json.dumps({**base, "engine": {"gguf": {"n_ubatch": 512}}}))
    assert load_profile(str(good)).engine == {"gguf": {"n_ubatch": 512}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**base, "engine": {"gguf": 512}}))
    with pytest.raises(ProfileError, match="bad.json: engine must be an object of objects"):
        load_profile(str(bad))
    assert load_profile("mobile").engine.get("gguf") is not None  # the shipped profiles say what they run


def test_engine_overrides_parse():
    assert parse_engine(["gguf.n_ubatch=512", "gguf.flash_attn=off", "gguf.repack=false", "onnx.x=1.5"]) == {
        "gguf": {"n_ubatch": 512, "flash_attn": "off", "repack": False}, "onnx": {"x": 1.5}}
    with pytest.raises(ValueError, match="expected FORMAT.KEY=VALUE"):
        parse_engine(["n_ubatch=512"])
