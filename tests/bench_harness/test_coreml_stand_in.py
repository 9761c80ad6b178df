"""A format whose engine cannot run on this host but has a stand-in: the bench scores its answers and
reports its latency as "needs macOS" (CoreML on Linux, through the reference MIL evaluator)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bench.run as bench_run
from allava.formats import get_format

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'allava-edge[coreml]')")


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS CoreML runs itself and is timed")
def test_coreml_variant_scored_by_stand_in_with_latency_needs_macos(tiny_setup, tmp_path):
    assert get_format("coreml").stand_in_available()
    exports = tmp_path / "exports"
    proc = subprocess.run([sys.executable, "export/to_coreml.py", str(tiny_setup["checkpoint"]), "--outdir",
                           str(exports / "coreml" / "INT8"), "--precision", "int8", "--verify", "0"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    argv = ["--device", "mobile", "--checkpoint", str(tiny_setup["checkpoint"]), "--exports", str(exports),
            "--data-root", str(tiny_setup["world"]), "--limit", "3", "--repeats", "1", "--warmup", "0",
            "--latency-tokens", "4", "--no-build", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert bench_run.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    by = {v["name"]: v for v in res["variants"]}
    cm, ref = by["coreml:INT8"], by["pytorch:FP32"]
    assert cm["status"] == "ok" and cm["latency_unavailable"] == "needs macOS"
    assert cm["executed_by"] == "runtimes.coreml_runtime:CoreMLReferenceRuntime"
    assert cm["latency"] == {} and cm["peak_rss_mb"] is None and cm["roofline"] is None
    n = res["benchmarks"][0]["n_items"]
    assert cm["cache"] == {"hits": 0, "generated": n}
    assert cm["accuracy"]["world"]["headline"] is not None and cm["accuracy"]["world"]["delta"] is not None
    assert ref["latency"]  # the reference is still timed
    md = (out / "report.md").read_text()
    assert "| coreml:INT8 | ok |" in md and "latency: needs macOS" in md
    assert "answers from runtimes.coreml_runtime:CoreMLReferenceRuntime" in md
    row = next(r for r in (out / "results.csv").read_text().splitlines() if r.startswith("coreml:INT8"))
    assert "latency: needs macOS" in row
