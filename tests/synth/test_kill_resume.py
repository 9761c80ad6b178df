"""Acceptance: SIGKILL at about half way, rerun -> the same final files as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from allava.openai_stub import StubServer
from tests.synth.conftest import API_KEY, RUN, laion_key, make_images, run_cli
from tests.synth.test_http_pipeline import behaviour_for

FINAL = ("ALLaVA-Caption-LAION.json", "ALLaVA-Instruct-LAION.json")


def _args(images: Path, server: StubServer, out: Path) -> list[str]:
    return ["laion", "--images", str(images), "--base-url", server.base_url, "--model", "stub-model",
            "--output-dir", str(out), "--concurrency", "4", "--timeout", "0.6", "--backoff-base", "0.01",
            "--price-in", "1", "--price-out", "1"]


def _final(out: Path) -> dict[str, object]:
    res: dict[str, object] = {}
    for name in FINAL:
        res[name] = sorted(json.loads((out / name).read_text()), key=lambda r: r["id"])
    res["rejects"] = sorted((json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()),
                            key=lambda r: r["key"])
    res["images"] = sorted(p.name for p in (out / "images").iterdir())
    return res


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    images = tmp_path / "images"
    paths = make_images(images, 200)
    script = {laion_key(p): behaviour_for(i) for i, p in enumerate(paths)}

    with StubServer(script, delay=0.02, retry_after="0.2", hang=1.0, api_key=API_KEY, lifetime=120) as server:
        ref = run_cli(*_args(images, server, tmp_path / "ref"))
        assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    with StubServer(script, delay=0.02, retry_after="0.2", hang=1.0, api_key=API_KEY, lifetime=120) as server:
        env = dict(os.environ, OPENAI_API_KEY=API_KEY)
        proc = subprocess.Popen([sys.executable, str(RUN), *_args(images, server, out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal = out / "journal.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 100:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "finished before we could kill it"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        lines = journal.read_bytes().count(b"\n")
        assert 50 <= lines < 200
        assert not (out / FINAL[0]).exists()  # final files only come at the end

        again = run_cli(*_args(images, server, out))
        assert again.returncode == 0, again.stderr
        assert "already done" in again.stdout

    assert _final(out) == _final(tmp_path / "ref")
    entries = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    keys = [e["key"] for e in entries if e["status"] == "response"]
    assert len(keys) == len(set(keys)) == 200
