"""Every command that reads a manifest, a profile, a config or a checkpoint, on one that is cut short:
one line naming the file, exit 2, no traceback (allava/cli.py).

A truncated file is what a killed copy or a full disk leaves; the issue found export/check.py printing
a ManifestError traceback for one. The commands run in this process (``main(argv)``), which is what
their ``__main__`` calls; export/check.py, the issue's case, also runs as the user types it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _cut(path: Path) -> None:
    """Keep the first half of the file, as an interrupted write would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def broken(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    manifest = {"schema_version": 1, "format": "gguf", "precision": "F16", "name": "tiny",
                "files": {"model": "tiny-F16.gguf", "mmproj": "mmproj-tiny-F16.gguf"}, "sizes": {}, "source": {}}
    gguf = root / "gguf" / "F16"
    gguf.mkdir(parents=True)
    (gguf / "manifest.json").write_text(json.dumps(manifest))
    _cut(gguf / "manifest.json")
    onnx = root / "onnx"
    (onnx / "variants" / "FP32").mkdir(parents=True)
    (onnx / "variants" / "FP32" / "manifest.json").write_text(json.dumps({**manifest, "format": "onnx"}))
    _cut(onnx / "variants" / "FP32" / "manifest.json")
    config_ck = root / "ck-config"
    shutil.copytree(tiny_ckpt, config_ck)
    _cut(config_ck / "config.json")
    weights_ck = root / "ck-weights"
    shutil.copytree(tiny_ckpt, weights_ck)
    _cut(weights_ck / "model.safetensors")
    profile = root / "profile.json"
    profile.write_text(json.dumps({"name": "broken", "threads": 2, "memory_budget_gib": 4}))
    _cut(profile)
    config = root / "config.yaml"
    config.write_text("preset: tiny\nstages:\n  - name: pt\n    lr: [1.0e-3, 2.0e-3]\n")
    _cut(config)
    return {"root": root, "ckpt": tiny_ckpt, "gguf": gguf, "onnx": onnx, "config_ck": config_ck,
            "weights_ck": weights_ck, "profile": profile, "config": config}


def _check(rc: int, err: str, names: Path) -> None:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert str(names) in lines[0], lines[0]
    assert rc == 2, err


def _main(module: str):
    import importlib

    return importlib.import_module(module).main


CASES = [
    # (id, module, argv with {placeholders}, the file the line names)
    ("check-manifest", "export.check", ["{ckpt}", "{gguf}", "-n", "1", "--no-stock"], "{gguf}/manifest.json"),
    ("check-export-folder", "export.check", ["{ckpt}", "{root}/gguf", "-n", "1"], "{gguf}/manifest.json"),
    ("check-config", "export.check", ["{config_ck}", "{root}/gguf", "-n", "1"], "{config_ck}/config.json"),
    ("check-weights", "export.check", ["{weights_ck}", "{root}/gguf", "-n", "1"], "{weights_ck}/model.safetensors"),
    ("quantize-gguf-manifest", "quantize.run", ["--format", "gguf", "--types", "q4_0", "--export", "{root}/gguf"],
     "{gguf}/manifest.json"),
    ("quantize-onnx-manifest", "quantize.run", ["--format", "onnx", "--types", "int8", "--export", "{onnx}"],
     "{onnx}/variants/FP32/manifest.json"),
    ("quantize-gptq-config", "quantize.run", ["--format", "gptq", "{config_ck}", "--outdir", "{root}/gptq"],
     "{config_ck}/config.json"),
    ("to_gguf-config", "export.to_gguf", ["{config_ck}", "--outdir", "{root}/out-gguf"], "{config_ck}/config.json"),
    ("to_gguf-weights", "export.to_gguf", ["{weights_ck}", "--outdir", "{root}/out-gguf"],
     "{weights_ck}/model.safetensors"),
    ("to_onnx-config", "export.to_onnx", ["{config_ck}", "--outdir", "{root}/out-onnx"], "{config_ck}/config.json"),
    ("to_onnx-weights", "export.to_onnx", ["{weights_ck}", "--outdir", "{root}/out-onnx"],
     "{weights_ck}/model.safetensors"),
    ("to_onnx-manifest-in-outdir", "export.to_onnx", ["{ckpt}", "--outdir", "{onnx}"],
     "{onnx}/variants/FP32/manifest.json"),
    ("to_coreml-config", "export.to_coreml", ["{config_ck}", "--outdir", "{root}/out-coreml"],
     "{config_ck}/config.json"),
    ("to_coreml-source-manifest", "export.to_coreml", ["{ckpt}", "--outdir", "{root}/out-coreml", "--source", "{gguf}"],
     "{gguf}/manifest.json"),
    ("train-config", "train.run", ["--config", "{config}"], "{config}"),
    ("bench-profile", "bench.run", ["--device", "{profile}", "--no-build", "--benchmarks", "none",
                                    "--output-dir", "{root}/bench"], "{profile}"),
]


@pytest.mark.parametrize(("module", "argv", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cut_short_input_is_one_line_exit_2(broken: dict[str, Path], module: str, argv: list[str], names: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    if module == "export.to_coreml":
        pytest.importorskip("coremltools")
    if "gguf" in argv and module == "quantize.run":
        pytest.importorskip("llama_cpp", reason="llama_cpp is not importable: run scripts/build_llama_cpp.sh")
    fill = {k: str(v) for k, v in broken.items()}
    rc = _main(module)([a.format(**fill) for a in argv])
    _check(rc, capsys.readouterr().err, Path(names.format(**fill)))
    assert not (broken["root"] / "out-gguf").exists() and not (broken["root"] / "out-onnx").exists()


def test_check_cli_on_cut_short_manifest(broken: dict[str, Path]) -> None:
    """The issue's case as typed: python export/check.py CKPT VARIANT."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "export/check.py", str(broken["ckpt"]), str(broken["gguf"]), "-n", "1"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    _check(p.returncode, p.stderr, broken["gguf"] / "manifest.json")
