"""End to end on a random tiny checkpoint: a truncated GGUF is marked failed, a re-run hits the cache."""

from __future__ import annotations

import json
import shutil

import pytest

import bench.run as bench_run
from allava.variant import MANIFEST
from tests.conftest import HELDOUT, TRAINED, needs_llama, needs_trained


@pytest.mark.slow
def test_run_failing_variant_and_cache(tiny_setup, tmp_path):
    exports = tmp_path / "exports"
    shutil.copytree(tiny_setup["exports"], exports)
    # a broken variant: Q8_0 whose language model is cut to a quarter (manifest says it is fine)
    bad = exports / "gguf" / "Q8_0"
    shutil.copytree(exports / "gguf" / "Q4_0", bad)
    man = json.loads((bad / MANIFEST).read_text())
    lm = bad / man["files"]["model"]
    data = lm.read_bytes()
    lm.unlink()  # the copy may be a hard link shared with Q4_0
    lm.write_bytes(data[: len(data) // 4])
    man["precision"] = "Q8_0"
    (bad / MANIFEST).write_text(json.dumps(man))

    out = tmp_path / "out"
    argv = ["--device", "mobile", "--checkpoint", str(tiny_setup["checkpoint"]), "--exports", str(exports),
            "--data-root", str(tiny_setup["world"]), "--limit", "3", "--repeats", "1", "--warmup", "0",
            "--latency-tokens", "4", "--no-build", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert bench_run.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    by = {v["name"]: v for v in res["variants"]}
    assert by["pytorch:FP32"]["status"] == "ok" and by["gguf:Q4_0"]["status"] == "ok"
    assert by["gguf:Q8_0"]["status"] == "failed" and by["gguf:Q8_0"]["reason"]
    q4 = by["gguf:Q4_0"]
    n = res["benchmarks"][0]["n_items"]
    assert 0 < n <= 8  # (stratified_subsample may exceed a limit below the number of strata; see report)
    assert q4["cache"] == {"hits": 0, "generated": n}
    assert q4["accuracy"]["world"]["headline"] is not None and q4["accuracy"]["world"]["delta"] is not None
    assert q4["agreement"]["n"] == n and q4["roofline"]["fraction"] > 0
    ci = q4["accuracy"]["world"]["delta_ci"]  # the paired interval on real predictions (bench/harness/confidence.py)
    assert ci["lo"] <= ci["hi"] and ci["resamples"] > 0
    assert q4["accuracy"]["world"]["significant"] == (ci["lo"] > 0 or ci["hi"] < 0)
    assert q4["accuracy"]["world"]["agreement"]["same"] <= n
    # the harness clock spans llama.cpp's own decode time, so its rate cannot exceed the engine's (2% for clock
    # granularity); the README's 0.961-0.974 is measured at 32 tokens x 3 repeats on the trained default (below)
    assert 0.5 < q4["overhead"]["ratio"] <= 1.02, q4["overhead"]
    assert q4["peak_rss_mb"] < by["pytorch:FP32"]["peak_rss_mb"]  # per-process RSS, not the parent's
    md = (out / "report.md").read_text()
    assert "gguf:Q8_0** failed" in md and (out / "plot.png").is_file() and (out / "results.csv").is_file()

    assert bench_run.main(argv + ["--repeats", "0"]) == 0  # re-run: every prediction comes from the cache
    res2 = json.loads((out / "results.json").read_text())
    by2 = {v["name"]: v for v in res2["variants"]}
    assert by2["gguf:Q4_0"]["cache"] == {"hits": n, "generated": 0}
    assert by2["pytorch:FP32"]["cache"] == {"hits": n, "generated": 0}
    assert by2["gguf:Q4_0"]["accuracy"]["world"]["headline"] == q4["accuracy"]["world"]["headline"]


def test_missing_exports_folder_is_reported(tiny_setup, tmp_path):
    """--no-build with no export folder: the reference still runs, the log says the folder is missing."""
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tiny_setup["checkpoint"]), "--exports", str(tmp_path / "nope"), "--no-build",
            "--data-root", str(tiny_setup["world"]), "--benchmarks", "none", "--repeats", "0", "--warmup", "0",
            "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert bench_run.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert [v["name"] for v in res["variants"]] == ["pytorch:FP32"]
    assert any("does not exist" in line for line in res["log"])


@pytest.mark.slow
@needs_llama
@needs_trained
def test_decode_overhead_ratio_on_the_trained_default(tmp_path):
    """README: the harness's decode rate is 0.961-0.974 of llama.cpp's own counters (trained default, mobile
    profile, 32 tokens, 1 warm-up + 3 repeats; AMD EPYC with AVX512-BF16). On the AMX Xeon kind the C loop
    measured 0.935-0.951 (docs/experiments.md section 3), so the floor is 0.90: a few points under the lowest
    machine kind for a shared 2-core host; above 1.02 the harness would be timing less than the engine."""
    from export.to_gguf import export_gguf
    from quantize.gguf_quantizer import quantize_gguf

    exports = tmp_path / "exports"
    export_gguf(TRAINED, exports / "gguf", "f16")
    for q in ("q4_k_m", "q4_0"):
        quantize_gguf(exports / "gguf", q)
    out = tmp_path / "out"
    assert bench_run.main(["--device", "mobile", "--checkpoint", str(TRAINED), "--exports", str(exports),
                           "--data-root", str(HELDOUT.parent), "--variants", "gguf", "--benchmarks", "none",
                           "--repeats", "3", "--warmup", "1", "--latency-tokens", "32", "--no-build",
                           "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    res = json.loads((out / "results.json").read_text())
    ratios = {v["name"]: (v.get("overhead") or {}).get("ratio") for v in res["variants"] if v["name"].startswith("gguf:")}
    print("harness decode rate / llama.cpp's:", ratios)
    assert set(ratios) >= {"gguf:Q4_K_M", "gguf:Q4_0"}, ratios
    assert all(r is not None and 0.90 <= r <= 1.02 for r in ratios.values()), ratios
