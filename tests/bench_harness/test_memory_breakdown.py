"""The memory breakdown (bench/harness/memory.py) from a real worker process on a tiny GGUF variant:
it adds up to the peak, the mapped weights are the model file, no torch in the worker, and the report
shows it."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

from bench.harness import memory, memory_report
from tests.conftest import needs_llama

REPO = Path(__file__).resolve().parents[2]


def _stage(name, rss, hwm, anon, file, mapped=0.0):
    return {"stage": name, "VmRSS": rss, "VmHWM": hwm, "RssAnon": anon, "RssFile": file,
            "files_mapped": {"lm.gguf": mapped}}


def test_components_add_up_to_the_peak():
    stages = [_stage("start", 20, 20, 10, 10), _stage("before_load", 50, 50, 30, 20),
              _stage("after_load", 900, 950, 300, 600, 550), _stage("end", 1000, 1200, 380, 620, 560)]
    m = memory.breakdown(stages, {"components_mib": {"kv_cache": 40.0, "lm_compute": 20.0, "lm_weights_mapped": 550}})
    by = {c["name"]: c["mib"] for c in m["components"]}
    assert m["peak_mib"] == 1200 and abs(sum(by.values()) - 1200) < 0.5
    assert by["weights mapped from the model files"] == 560 and by["engine libraries (code pages)"] == 40
    assert by["kv_cache (engine statement)"] == 40 and by["other anonymous memory"] == 350 - 60
    assert by["transient (freed before the end)"] == 200
    assert "lm_weights_mapped (engine statement)" not in by  # mapped pages are counted from smaps, once
    assert memory.breakdown([_stage("end", 1, 1, 1, 1)]) == {}  # no before-load stage: nothing made up


@needs_llama
def test_worker_breakdown_on_a_gguf_variant(gguf_dir, tmp_path):
    variant = gguf_dir / "F16"
    job = {"format": "gguf", "path": str(variant), "threads": 2, "cpus": None, "runtime": None, "settings": {},
           "latency": {"image": None, "image_size": 96, "prompt": "USER: <image>\nWhat is it? ASSISTANT:",
                       "max_new_tokens": 8, "repeats": 1, "warmup": 0}, "requests": []}
    (tmp_path / "job.pkl").write_bytes(pickle.dumps(job))
    subprocess.run([sys.executable, "-m", "bench.harness.worker", str(tmp_path / "job.pkl"), str(tmp_path / "out")],
                   check=True, cwd=REPO, capture_output=True)
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    assert res["ok"] and res["torch_imported"] is False  # a GGUF worker never imports torch
    assert [s["stage"] for s in res["memory_stages"]] == ["start", "before_load", "after_load", "after_generation", "end"]
    m = memory.breakdown(res["memory_stages"], res["engine_memory"])
    by = {c["name"]: c["mib"] for c in m["components"]}
    assert abs(sum(by.values()) - m["peak_mib"]) < 1.0 and abs(m["peak_mib"] - res["peak_rss_mb"]) < 2.0
    lm = next(p for p in res["engine_memory"]["files"] if "mmproj" not in Path(p).name)
    lm_mib = Path(lm).stat().st_size / 2**20
    assert 0.9 * lm_mib <= by["weights mapped from the model files"] <= lm_mib + 8.5  # F16: used in place
    for name, mib in by.items():
        if name.endswith("(engine statement)"):
            assert 0 <= mib <= m["peak_mib"], name
    assert by["kv_cache (engine statement)"] > 0 and by["vision_weights (engine statement)"] > 0
    n_ctx = res["engine_settings"]["n_ctx"]
    assert n_ctx == 256 and res["engine_settings"]["n_ctx_policy"] == "sized to the need of the run"
    lines = memory_report.markdown_lines({"device": {"memory_budget_gib": 4.0},
                                         "variants": [{"name": "gguf:F16", "memory": m,
                                                       "engine_settings": res["engine_settings"]}]})
    text = "\n".join(lines)
    assert "## Memory breakdown" in text and f"| gguf:F16 | {m['peak_mib']:.0f} |" in text and "n_ctx 256" in text
