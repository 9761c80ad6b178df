"""Offline teacher, vflan/text modes, --dry-run, --max-cost and the Batch API mode."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from allava.openai_stub import StubServer
from allava.schema import load_records
from synth.cli import main
from tests.synth.conftest import API_KEY, make_images, run_cli


def _fake_teacher() -> types.ModuleType:
    """Stands in for allava.world.teacher (same three functions) until/unless the real one is there."""
    m = types.ModuleType("allava.world.teacher")

    def describe_image(image_path):
        if "unknown" in str(image_path):
            raise KeyError(str(image_path))
        return {"caption": f"A scene drawn for {Path(image_path).name} with two shapes.",
                "questions": ["How many shapes?", "Which shape is left?"], "chosen": 1, "answer": "The circle."}

    m.describe_image = describe_image
    m.answer_instruction = lambda p, ins: {"caption": f"A scene drawn for {Path(p).name} with shapes.", "answer": "Two."}
    m.answer_text = lambda q: f"Answer to: {q}"
    return m


def test_offline_teacher_laion_vflan_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "allava.world.teacher", _fake_teacher())
    imgs = make_images(tmp_path / "world", 5, size=(96, 96))
    (tmp_path / "world" / "unknown.png").write_bytes(make_images(tmp_path / "x", 6, size=(96, 96))[5].read_bytes())
    out = tmp_path / "out"
    assert main(["laion", "--images", str(tmp_path / "world"), "--teacher", "offline", "--output-dir", str(out), "--quiet"]) == 0
    insts, _ = load_records(out / "ALLaVA-Instruct-LAION.json")
    assert len(insts) == 5 and insts[0].conversations[0].value == "<image>\nWhich shape is left?"
    assert insts[0].extra["model"] == "offline-teacher"
    rej = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rej) == 1 and "offline teacher" in rej[0]["reason"]

    man = tmp_path / "vflan.jsonl"
    man.write_text("".join(json.dumps({"image": str(p), "instruction": "Count the shapes.", "answer": "2"}) + "\n" for p in imgs))
    assert main(["vflan", "--manifest", str(man), "--teacher", "offline", "--output-dir", str(tmp_path / "v"), "--quiet"]) == 0
    vi, _ = load_records(tmp_path / "v" / "ALLaVA-Instruct-VFLAN.json")
    assert len(vi) == 5 and vi[0].extra["original_answer"] == "2" and vi[0].conversations[1].value == "Two."

    tman = tmp_path / "text.csv"
    tman.write_text("instruction\nWhat is 2+2?\nName a prime.\nWhat is 2+2?\n")
    assert main(["text", "--manifest", str(tman), "--teacher", "offline", "--output-dir", str(tmp_path / "t"), "--quiet"]) == 0
    tr, _ = load_records(tmp_path / "t" / "ALLaVA-Text-Evol.json")
    assert len(tr) == 2 and tr[0].image is None  # the duplicate question went to rejects


def test_dry_run_makes_no_calls_and_writes_nothing(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 6)
    with StubServer(lifetime=60) as server:
        proc = run_cli("laion", "--images", str(tmp_path / "imgs"), "--base-url", server.base_url, "--model", "gpt-4o",
                       "--output-dir", str(tmp_path / "out"), "--dry-run")
        assert server.attempts == {}
    assert proc.returncode == 0, proc.stderr
    assert "to request 6" in proc.stdout and "estimate:" in proc.stdout and "$" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_max_cost_stops_cleanly_then_resumes(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs", 30)
    out = tmp_path / "out"
    args = ["laion", "--images", str(tmp_path / "imgs"), "--model", "m", "--output-dir", str(out),
            "--concurrency", "4", "--price-in", "1000", "--price-out", "1000"]
    with StubServer(lifetime=60) as server:
        proc = run_cli(*args, "--base-url", server.base_url, "--max-cost", "15")
        assert proc.returncode == 3, proc.stderr
        s = json.loads((out / "summary.json").read_text())
        assert s["stopped"] == "max-cost" and s["cost_usd"] <= 15 and 0 < s["accepted"] < 30 and s["pending"] > 0
        assert "--max-cost" in proc.stderr
        proc = run_cli(*args, "--base-url", server.base_url, "--max-cost", "1000")
        assert proc.returncode == 0, proc.stderr
        s = json.loads((out / "summary.json").read_text())
        assert s["accepted"] == 30 and s["pending"] == 0 and server.usage["responses"] == 30


def test_batch_submit_then_collect(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "imgs", 10)
    from tests.synth.conftest import laion_key

    script = {laion_key(paths[0]): "refuse"}
    out = tmp_path / "out"
    with StubServer(script, api_key=API_KEY, lifetime=60) as server:
        args = ["laion", "--images", str(tmp_path / "imgs"), "--base-url", server.base_url, "--model", "gpt-4o",
                "--output-dir", str(out), "--batch", "--batch-size", "4"]
        first = run_cli(*args)
        assert first.returncode == 0, first.stderr
        jobs = json.loads((out / "batch_jobs.json").read_text())
        assert len(jobs) == 3 and not any(j["collected"] for j in jobs)
        second = run_cli(*args)
        assert second.returncode == 0, second.stderr
        third = run_cli(*args)  # nothing left: no new submission
        assert len(server.batches) == 3
    caps, _ = load_records(out / "ALLaVA-Caption-LAION.json")
    assert len(caps) == 9
    s = json.loads((out / "summary.json").read_text())
    assert s["pending"] == 0 and s["rejected"] == 1
    expected = (server.usage["prompt_tokens"] * 2.5 + server.usage["completion_tokens"] * 10.0) / 1e6 * 0.5
    assert abs(s["cost_usd"] - expected) < 1e-5
    assert third.returncode == 0
    for f in out.rglob("*"):
        if f.is_file():
            assert API_KEY.encode() not in f.read_bytes()
