"""Acceptance: bad input -> one clear line on stderr, non-zero exit, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from allava.openai_stub import StubServer
from tests.synth.conftest import API_KEY, run_cli


def _one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("synth: error: ")
    return lines[0]


def test_missing_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("laion", "--images", str(tmp_path / "nope"), "--teacher", "offline", "--output-dir", str(out))
    assert "image folder not found" in _one_line_error(proc)
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [("m.jsonl", '{"path": "a.png"}\n{not json\n', "line 2"), ("m.csv", b"\xff\xfe\x00bad", "cannot read manifest"),
     ("m.json", '{"path": 1}', "JSON list"), ("m.xlsx", "x", "unknown format")],
)
def test_unreadable_manifest(tmp_path: Path, name: str, content, needle: str) -> None:
    m = tmp_path / name
    m.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out"
    proc = run_cli("laion", "--manifest", str(m), "--teacher", "offline", "--output-dir", str(out))
    assert needle in _one_line_error(proc)
    assert not out.exists()


def test_parquet_without_pyarrow_is_clear(tmp_path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        m = tmp_path / "m.parquet"
        m.write_bytes(b"PAR1")
        proc = run_cli("laion", "--manifest", str(m), "--teacher", "offline", "--output-dir", str(tmp_path / "o"))
        assert "pip install pyarrow" in _one_line_error(proc)


def test_dataset_without_datasets_is_clear(tmp_path: Path) -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        proc = run_cli("laion", "--dataset", "x/y", "--teacher", "offline", "--output-dir", str(tmp_path / "o"))
        assert "pip install datasets" in _one_line_error(proc)


def test_unknown_mode(tmp_path: Path) -> None:
    proc = run_cli("coco", "--images", str(tmp_path), "--output-dir", str(tmp_path / "o"))
    assert "unknown mode" in _one_line_error(proc)
    assert proc.returncode == 2


def test_text_mode_needs_instructions(tmp_path: Path, images) -> None:
    proc = run_cli("text", "--images", str(images[0].parent), "--teacher", "offline", "--output-dir", str(tmp_path / "o"))
    assert "--manifest" in _one_line_error(proc)


def test_401_server(tmp_path: Path, images) -> None:
    wrong = "sk-wrong-KEY-0123456789"
    with StubServer(api_key=API_KEY, lifetime=60) as server:
        out = tmp_path / "out"
        proc = run_cli("laion", "--images", str(images[0].parent), "--base-url", server.base_url, "--model", "m",
                       "--output-dir", str(out), "--concurrency", "4", "--backoff-base", "0.01", env_key=wrong)
    line = _one_line_error(proc)
    assert "401" in line and "OPENAI_API_KEY" in line
    assert wrong not in proc.stdout + proc.stderr
    assert not out.exists()  # nothing half-written


def test_401_keeps_existing_output_dir(tmp_path: Path, images) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with StubServer(api_key=API_KEY, lifetime=60) as server:
        proc = run_cli("laion", "--images", str(images[0].parent), "--base-url", server.base_url, "--model", "m",
                       "--output-dir", str(out), env_key="sk-wrong-KEY-0123456789")
    _one_line_error(proc)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
