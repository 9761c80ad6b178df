"""Outputs and exit codes from a synthetic results dict (no model): CSV columns, report, plot, --max-drop."""

from __future__ import annotations

import csv

import pytest

import bench.run as bench_run
from bench.harness import accuracy, report
from bench.harness.plot import pareto, write_plot
from bench.harness.profiles import load_profile


def _variant(name: str, score: float, dec: float, status: str = "ok", **kw) -> dict:
    fmt, prec = name.split(":")
    return {"name": name, "format": fmt, "precision": prec, "path": "/x", "size_bytes": 2**20 * (20 if fmt == "pytorch" else 5),
            "lm_bytes": 2**20, "reference": fmt == "pytorch", "status": status, "load_s": 0.1, "peak_rss_mb": 300.0,
            "latency": {"decode_tok_s": {"median": dec, "std": 1.0}, "ttft_ms": {"median": 50.0}},
            "roofline": {"fraction": 0.5}, "overhead": {"ratio": 0.97, "native_decode_tok_s": dec / 0.97} if fmt == "gguf" else None,
            "predictions": {"world": {"a": "red", "b": "2" if score > 75 else "3"}},
            "accuracy": {"world": {"headline": score, "status": "ok"},
                         "mmvet": {"headline": None, "status": "not scored: no judge"}} if status == "ok" else {}, **kw}


def fake_results() -> dict:
    prof = load_profile("mobile")
    vs = [_variant("pytorch:FP32", 80.0, 30.0), _variant("gguf:Q8_0", 79.0, 200.0), _variant("gguf:Q4_0", 70.0, 400.0),
          _variant("gguf:Q4_K_M", 0.0, 0.0, status="failed", reason="load failed: LlamaCppError: truncated")]
    benches = [{"name": "world", "data_root": "/w", "limit": 96, "n_items": 2, "status": "ok", "max_new_tokens": 8,
                "judged": False},
               {"name": "mmvet", "data_root": "/m", "limit": 8, "n_items": 2, "status": "ok", "max_new_tokens": 64,
                "judged": True}]

    class S:  # the fields add_deltas reads from a Suite
        def __init__(self, name):
            self.name = name

    accuracy.add_deltas(vs, "pytorch:FP32", [S("world"), S("mmvet")])
    return {"device": {**prof.__dict__, "host_threads": 2, "cpus": [0, 1]}, "reference": "pytorch:FP32",
            "config": {"warmup": 1, "repeats": 3, "latency_tokens": 32}, "bandwidth_gbs": 10.0, "judge": None,
            "judge_base_url": None, "benchmarks": benches, "variants": vs,
            "skipped": [{"variant": "gguf:F16", "path": "/f", "size_bytes": 2**33, "reason": "does not fit the mobile memory budget"}],
            "host": {"cpu": "test cpu", "logical_cpus": 2, "usable_cpus": 2, "ram_gib": 8.0, "os": "linux",
                     "load_avg": (0.0, 0.0, 0.0), "versions": {"python": "3"}},
            "log": [], "elapsed_s": 1.0}


def test_deltas_and_agreement():
    vs = fake_results()["variants"]
    q4 = next(v for v in vs if v["name"] == "gguf:Q4_0")
    assert q4["accuracy"]["world"]["delta"] == pytest.approx(-10.0)
    assert q4["agreement"]["exact"] == pytest.approx(50.0)  # "red" agrees, "3" vs "2" does not
    assert accuracy.worst_drop(vs) == (pytest.approx(10.0), "gguf:Q4_0 on world")
    assert accuracy.token_f1("a red circle", "the red circle") == pytest.approx(2 / 3)


def test_report_csv_plot(tmp_path):
    res = fake_results()
    report.write_json(res, tmp_path)
    report.write_csv(res, tmp_path)
    md = report.write_markdown(res, tmp_path).read_text()
    write_plot(res, tmp_path)
    assert (tmp_path / "plot.png").stat().st_size > 1000
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    cols = rows[0].keys()
    for c in ("variant", "status", "reason", "load_s", "image_encode_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s",
              "peak_rss_mb", "size_mib", "roofline_fraction", "native_overhead_ratio", "score:world", "delta:world",
              "agree_exact:world", "agree_token_f1:world", "score:mmvet"):
        assert c in cols
    by = {r["variant"]: r for r in rows}
    assert by["gguf:Q4_0"]["delta:world"] == "-10.0" and by["pytorch:FP32"]["score:mmvet"] == "not scored: no judge"
    assert by["gguf:F16"]["status"] == "skipped" and by["gguf:Q4_K_M"]["reason"].startswith("load failed")
    assert "70.0 (-10.0; 1/2 same)" in md and "no judge" in md and "Judge: none" in md
    assert "gguf:Q4_K_M** failed: load failed" in md and "gguf:F16** skipped" in md and "test cpu" in md


def test_pareto():
    assert pareto([(1, 3), (2, 2), (1.5, 1), (3, 1)]) == [0, 1, 3]


@pytest.mark.parametrize(("max_drop", "code"), [(5.0, 3), (20.0, 0), (None, 0)])
def test_max_drop_exit_code(tmp_path, monkeypatch, max_drop, code):
    import bench.harness.runner as runner

    def fake_execute(cfg):
        cfg.output_dir = tmp_path
        return fake_results()

    monkeypatch.setattr(runner, "execute", fake_execute)
    argv = ["--output-dir", str(tmp_path)] + (["--max-drop", str(max_drop)] if max_drop is not None else [])
    assert bench_run.main(argv) == code
    assert (tmp_path / "report.md").is_file()


def test_cli_bad_names(capsys):
    assert bench_run.main(["--device", "toaster"]) == 2
    assert "known devices: desktop, laptop, mobile, server-gpu" in capsys.readouterr().err
    assert bench_run.main(["--benchmarks", "world,bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'bogus'" in err and "mme" in err
