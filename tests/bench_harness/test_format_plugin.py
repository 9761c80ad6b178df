"""Adding a format is shown, not claimed: a throw-away format registered through the format table
alone (a plug-in module named in ALLAVA_FORMATS, with its own exporter program and runtime) is
built, run, scored and reported by the unchanged bench, and a format this host cannot run is
listed as such with its size. No project file is touched: everything lives in tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PLUGIN = '''
"""A toy format: the checkpoint's files copied into a variant folder, run by the PyTorch runtime."""
from allava.formats import Format, HostNeed, Precision, StageCommand, register
from runtimes.torch_runtime import TorchRuntime

EXPORT = StageCommand("toyfmt.export", ("{checkpoint}", "--outdir", "{outdir}", "--precision", "{precision}"))
register(Format(name="toy", runtime="toyfmt:ToyRuntime", precisions=(Precision("T32", 32.0, ("export",), 32.0),),
                folder="toy", export=EXPORT))
register(Format(name="toyremote", runtime="toyfmt:ToyRuntime", precisions=(Precision("T32", 32.0, ("export",)),),
                folder="toyremote", export=EXPORT, host_needs=(HostNeed("a toaster", lambda: False),)))


class ToyRuntime(TorchRuntime):
    format = "toy"
'''

EXPORTER = '''
import argparse, shutil, sys
from pathlib import Path
from allava.variant import Manifest

ap = argparse.ArgumentParser()
ap.add_argument("checkpoint", type=Path)
ap.add_argument("--outdir", type=Path, required=True)
ap.add_argument("--precision", required=True)
a = ap.parse_args()
fmt = a.outdir.name  # the table's folder: toy or toyremote
vdir = a.outdir / a.precision.upper()
vdir.mkdir(parents=True, exist_ok=True)
files = {}
for f in sorted(a.checkpoint.iterdir()):
    if f.is_file():
        shutil.copy(f, vdir / f.name)
        files[f.stem if f.suffix != ".safetensors" else "model"] = vdir / f.name
Manifest.for_files(vdir, files, format=fmt, precision=a.precision.upper(), name="toy",
                   source={"checkpoint": str(a.checkpoint.resolve())}, created_by="toyfmt.export").write(vdir)
print("wrote", vdir)
'''


@pytest.mark.slow
def test_a_plugin_format_is_built_run_and_reported(tiny_setup, tmp_path):
    plugins = tmp_path / "plugins" / "toyfmt"
    plugins.mkdir(parents=True)
    (plugins / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (plugins / "export.py").write_text(textwrap.dedent(EXPORTER))
    profile = tmp_path / "toy-device.json"
    profile.write_text(json.dumps({"threads": 2, "memory_budget_gib": 8, "description": "a device that runs toys",
                                   "allowed_variants": ["pytorch:FP32", "toy:*", "toyremote:*"]}))
    out, exports = tmp_path / "out", tmp_path / "exports"
    env = {**os.environ, "ALLAVA_FORMATS": "toyfmt",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "bench/run.py", "--device", str(profile), "--checkpoint", str(tiny_setup["checkpoint"]),
           "--exports", str(exports), "--data-root", str(tiny_setup["world"]), "--limit", "3", "--repeats", "1",
           "--warmup", "0", "--latency-tokens", "4", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    res = json.loads((out / "results.json").read_text())
    assert "export toy:T32: ok" in res["log"] and (exports / "toy" / "T32").is_dir()  # built through the table
    by = {v["name"]: v for v in res["variants"]}
    toy, ref = by["toy:T32"], by["pytorch:FP32"]
    assert toy["status"] == "ok" and toy["latency"]["decode_tok_s"]["median"] > 0 and toy["peak_rss_mb"] > 0
    assert toy["accuracy"]["world"]["headline"] == ref["accuracy"]["world"]["headline"]  # the same weights
    assert toy["agreement"]["exact"] == 100.0 and toy["bits_per_weight"] == 32.0
    remote = by["toyremote:T32"]
    assert remote["status"] == "not runnable" and remote["reason"] == "not runnable here: needs a toaster"
    assert remote["size_bytes"] > 0
    md = (out / "report.md").read_text()
    assert "| toy:T32 | ok |" in md and "**toyremote:T32** not runnable here: needs a toaster" in md
