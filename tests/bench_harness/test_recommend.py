"""--recommend: the pick (most accurate inside the memory budget and latency targets), the Pareto front, the
"nothing fits" answer with each failed constraint's margin, and strict profile validation (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.run as bench_run
from bench.harness.profiles import ProfileError, known_devices, load_profile
from bench.harness.recommend import pareto_front, recommend

BENCH = [{"name": "world"}]


def _e(name: str, acc: float | None, ttft_ms: float, dec: float, rss: float, *, bits: float = 4.0, ref: bool = False,
       status: str = "ok") -> dict:
    return {"name": name, "status": status, "reference": ref, "bits_per_weight": bits, "size_bytes": 2**20,
            "peak_rss_mb": rss, "accuracy": {"world": {"headline": acc}} if acc is not None else {},
            "latency": {"ttft_ms": {"median": ttft_ms}, "decode_tok_s": {"median": dec}}}


ENTRIES = [_e("pytorch:FP32", 90.0, 5000, 2.0, 9000, bits=32, ref=True),  # the yardstick: never the pick
           _e("gguf:F16", 89.0, 3000, 6.0, 5000, bits=16),                # most accurate, over a 4 GiB budget
           _e("gguf:Q8_0", 88.0, 2000, 9.0, 3000, bits=8.5),              # the pick
           _e("gguf:Q4_K_M", 85.0, 1500, 12.0, 2000, bits=4.9),           # fits, less accurate
           _e("gguf:Q4_0", 84.0, 1800, 11.0, 2100, bits=4.5),             # dominated by Q4_K_M
           _e("onnx:INT8", 88.5, 9000, 3.0, 3500, bits=8)]                # accurate but misses both latency targets


def test_picks_most_accurate_inside_budget_and_targets():
    rec = recommend(ENTRIES, BENCH, 4.0, {"ttft_s": 5, "decode_tok_s": 5})
    r = rec["recommendation"]
    assert r["variant"] == "gguf:Q8_0" and r["runner_up"] == "gguf:Q4_K_M"
    assert r["accuracy"] == 88.0 and r["ttft_s"] == 2.0 and rec["constraints_failed"] == []
    assert rec["accuracy_source"].startswith("measured: world")
    by = {c["variant"]: c for c in rec["candidates"]}
    assert [m["constraint"] for m in by["gguf:F16"]["misses"]] == ["memory_budget"]
    assert by["gguf:F16"]["misses"][0]["by"] == pytest.approx(5000 - 4096)
    assert {m["constraint"] for m in by["onnx:INT8"]["misses"]} == {"ttft", "decode"}
    assert "pytorch:FP32" not in by and rec["excluded"][0]["variant"] == "pytorch:FP32"
    # without latency targets the accurate ONNX variant wins; a looser budget lets F16 in
    assert recommend(ENTRIES, BENCH, 4.0)["recommendation"]["variant"] == "onnx:INT8"
    assert recommend(ENTRIES, BENCH, 8.0, {"ttft_s": 5})["recommendation"]["variant"] == "gguf:F16"


def test_ties_go_to_less_memory_and_untimed_or_failed_are_not_candidates():
    entries = [_e("a", 80.0, 1000, 9.0, 3000), _e("b", 80.0, 1200, 9.0, 2500), _e("c", 99.0, 1, 99, 1, status="failed")]
    entries.append(_e("d", 99.0, 1, 99, 1) | {"latency_unavailable": "CoreML needs macOS"})
    rec = recommend(entries, BENCH, 4.0, {"ttft_s": 5})
    assert rec["recommendation"]["variant"] == "b"
    assert {e["variant"] for e in rec["excluded"]} == {"c", "d"}


def test_pareto_front_over_accuracy_ttft_memory():
    rec = recommend(ENTRIES, BENCH, 4.0, {"ttft_s": 5, "decode_tok_s": 5})
    # Q4_0 is dominated by Q4_K_M (more accurate, faster, smaller); INT8 stays (the slowest, but more accurate
    # than Q8_0); the front is listed from the most accurate down
    assert rec["pareto_front"] == ["gguf:F16", "onnx:INT8", "gguf:Q8_0", "gguf:Q4_K_M"]
    rows = [{"variant": n, "accuracy": a, "ttft_s": t, "peak_rss_mib": m}
            for n, a, t, m in [("x", 1, 1, 1), ("y", 1, 1, 1), ("z", 0, 2, 2)]]
    assert pareto_front(rows) == ["x", "y"]  # equal points do not dominate each other


def test_nothing_fits_names_each_constraint_and_margin():
    rec = recommend(ENTRIES, BENCH, 1.0, {"ttft_s": 1.0, "decode_tok_s": 20})
    assert rec["recommendation"] is None
    failed = {m["constraint"]: m for m in rec["constraints_failed"]}
    assert set(failed) == {"memory_budget", "ttft", "decode"}
    assert failed["memory_budget"]["by"] == pytest.approx(2000 - 1024) and failed["memory_budget"]["closest"] == "gguf:Q4_K_M"
    assert failed["ttft"]["by"] == pytest.approx(0.5) and failed["decode"]["by"] == pytest.approx(8.0)
    # each candidate fails something, yet no constraint fails them all: every miss is listed per variant
    mixed = recommend([_e("a", 1, 1000, 9, 5000), _e("b", 2, 9000, 9, 1000)], BENCH, 4.0, {"ttft_s": 5})
    assert mixed["recommendation"] is None
    assert {(m["closest"], m["constraint"]) for m in mixed["constraints_failed"]} == {("a", "memory_budget"), ("b", "ttft")}
    # nothing ran (every variant's size estimate was over): the margin comes from the closest estimate
    skipped = [{"variant": "gguf:Q4_0", "est_memory_bytes": 3 * 2**30}, {"variant": "gguf:Q8_0", "est_memory_bytes": 5 * 2**30},
               {"variant": "pytorch:FP32", "est_memory_bytes": 14 * 2**30}]
    none_ran = recommend([], BENCH, 1.0, {"ttft_s": 5}, skipped=skipped)
    assert none_ran["recommendation"] is None and len(none_ran["constraints_failed"]) == 1
    m = none_ran["constraints_failed"][0]
    assert (m["constraint"], m["closest"], m["by"]) == ("memory_budget", "gguf:Q4_0", 2048)


def test_accuracy_stand_ins_without_measured_accuracy():
    timed = [_e("gguf:Q8_0", None, 2000, 9, 3000, bits=8.5), _e("gguf:Q4_K_M-VQ8_0", None, 1500, 12, 2000, bits=4.9)]
    rec = recommend(timed, [], 4.0)
    assert rec["recommendation"]["variant"] == "gguf:Q8_0" and rec["accuracy_source"].startswith("stand-in: bits per weight")
    other = {"variants": [_e("gguf:Q8_0", 70.0, 1, 1, 1), _e("gguf:Q4_K_M", 75.0, 1, 1, 1)], "benchmarks": BENCH,
             "config": {"model": "tiny"}, "source": "outputs/bench/mobile/results.json"}
    rec = recommend(timed, [], 4.0, accuracy_from=other)  # the VQ8_0 variant takes its LM precision's score
    assert rec["recommendation"]["variant"] == "gguf:Q4_K_M-VQ8_0" and rec["recommendation"]["accuracy"] == 75.0
    assert "outputs/bench/mobile/results.json" in rec["accuracy_source"] and "tiny" in rec["accuracy_source"]


def test_shipped_profiles_have_targets():
    for name in known_devices():
        p = load_profile(name)
        assert set(p.targets) == {"ttft_s", "decode_tok_s"}, name
        assert "Latency targets" in p.description, name  # the profile says why
    assert load_profile("mobile").targets["ttft_s"] > load_profile("desktop").targets["ttft_s"]


GOOD = {"threads": 2, "memory_budget_gib": 4.0, "allowed_variants": ["gguf:*"], "targets": {"ttft_s": 10, "decode_tok_s": 5}}


@pytest.mark.parametrize("patch,field", [
    ({"memory_budget_gib": "4 GiB"}, "'memory_budget_gib'"),
    ({"memory_budget_gib": -1}, "'memory_budget_gib'"),
    ({"threads": 2.5}, "'threads'"),
    ({"threads": 0}, "'threads'"),
    ({"allowed_variants": "gguf:*"}, "'allowed_variants'"),
    ({"affinity": "all"}, "'affinity'"),
    ({"bandwidth": -3}, "'bandwidth'"),
    ({"targets": {"ttft_s": -1}}, "'targets.ttft_s'"),
    ({"targets": {"decode_tok_s": "fast"}}, "'targets.decode_tok_s'"),
    ({"targets": {"ttft": 5}}, "'targets.ttft'"),
    ({"targets": [5]}, "'targets'"),
    ({"memory_budget_gb": 4}, "memory_budget_gb"),
    ({"threads": None}, "'threads'"),
])
def test_malformed_profile_field_one_line_exit_2(tmp_path, capsys, patch, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(GOOD | patch))
    with pytest.raises(ProfileError) as e:
        load_profile(str(path))
    assert str(path) in str(e.value) and field in str(e.value) and "\n" not in str(e.value)
    assert bench_run.main(["--device", str(path), "--benchmarks", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and str(path) in err[0]


def test_missing_threads_one_line(tmp_path, capsys):
    path = tmp_path / "nothreads.json"
    path.write_text(json.dumps({k: v for k, v in GOOD.items() if k != "threads"}))
    assert bench_run.main(["--device", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothreads.json" in err[0] and "threads" in err[0]
    (tmp_path / "ok.json").write_text(json.dumps(GOOD))
    assert load_profile(str(tmp_path / "ok.json")).targets == GOOD["targets"]


def _profile(tmp_path: Path, name: str, budget: float, targets: dict) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "threads": 2, "memory_budget_gib": budget, "targets": targets,
                                "allowed_variants": ["pytorch:FP32", "gguf:*"], "affinity": "first-n"}))
    return path


@pytest.mark.slow
def test_cli_recommends_and_says_when_nothing_fits(tiny_setup, tmp_path):
    """Two real runs on the tiny checkpoint's GGUF exports (the second from the prediction cache)."""
    common = ["--checkpoint", str(tiny_setup["checkpoint"]), "--exports", str(tiny_setup["exports"]),
              "--data-root", str(tiny_setup["world"]), "--limit", "3", "--repeats", "1", "--warmup", "0",
              "--latency-tokens", "4", "--no-build", "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "fits"
    assert bench_run.main(["--device", str(_profile(tmp_path, "roomy", 8.0, {"ttft_s": 60, "decode_tok_s": 0.5})),
                           "--output-dir", str(out), "--recommend", *common]) == 0
    res = json.loads((out / "results.json").read_text())
    rec = res["recommendation"]
    assert rec["variant"] in {"gguf:F16", "gguf:Q4_0"} and rec["accuracy_source"].startswith("measured: world")
    analysis = res["recommendation_analysis"]
    best = max(c["accuracy"] for c in analysis["candidates"])
    assert rec["accuracy"] == best and rec["peak_rss_mib"] < 8 * 1024 and rec["variant"] in analysis["pareto_front"]
    md = (out / "report.md").read_text()
    assert "## Recommendation" in md and f"**Ship {rec['variant']}**" in md and "Pareto" in md

    tight = tmp_path / "tight"  # 1 MiB: no variant's process fits
    assert bench_run.main(["--device", str(_profile(tmp_path, "tiny-phone", 0.001, {"ttft_s": 60})),
                           "--output-dir", str(tight), *common]) == 0  # on by default
    res = json.loads((tight / "results.json").read_text())
    assert res["recommendation"] is None
    failed = res["recommendation_analysis"]["constraints_failed"]
    assert [m["constraint"] for m in failed] == ["memory_budget"] and failed[0]["by"] > 0
    md = (tight / "report.md").read_text()
    assert "Nothing fits: no recommendation" in md and "memory_budget" in md

    off = tmp_path / "off"
    assert bench_run.main(["--device", str(_profile(tmp_path, "roomy", 8.0, {})), "--output-dir", str(off),
                           "--no-recommend", *common]) == 0
    assert "recommendation" not in json.loads((off / "results.json").read_text())
