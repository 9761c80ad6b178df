"""Acceptance: bad input -> one clear line on stderr, non-zero exit, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from allava.openai_stub import StubServer
from tests.synth.conftest import API_KEY, RUN, run_cli


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


def _run_cli_without(module: str, *args: str) -> subprocess.CompletedProcess:
    """synth/run.py in a fresh interpreter where ``import <module>`` fails, whatever this venv holds.

    ``sys.modules[name] = None`` makes every import of it raise ImportError, which is what a user
    without the optional package gets; so the "missing" branch is exercised on every machine."""
    code = (f"import runpy, sys; sys.modules[{module!r}] = None; sys.argv = [{str(RUN)!r}] + sys.argv[1:]; "
            f"runpy.run_path({str(RUN)!r}, run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["OPENAI_API_KEY"] = API_KEY
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)


def test_parquet_manifest_with_and_without_pyarrow(tmp_path: Path, images) -> None:
    """Without pyarrow: one clear line naming the install. With it (a dev/CI venv): a real parquet
    manifest is read, relative paths resolved, and a corrupt one is one clear line, not a traceback."""
    m = tmp_path / "m.parquet"
    m.write_bytes(b"PAR1")
    proc = _run_cli_without("pyarrow", "laion", "--manifest", str(m), "--teacher", "offline",
                            "--output-dir", str(tmp_path / "o"))
    assert "pip install pyarrow" in _one_line_error(proc)
    assert not (tmp_path / "o").exists()

    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed: the with-pyarrow half needs it")
    import pyarrow.parquet as pq

    from synth.inputs import rows_from_manifest

    proc = run_cli("laion", "--manifest", str(m), "--teacher", "offline", "--output-dir", str(tmp_path / "o"))
    assert "cannot read manifest" in _one_line_error(proc)
    good = images[0].parent / "good.parquet"
    pq.write_table(pa.table({"path": [images[0].name, images[1].name], "caption": ["one", "two"]}), good)
    rows = rows_from_manifest(good)
    assert [(r.path, r.caption) for r in rows] == [(images[0], "one"), (images[1], "two")]


def test_dataset_input_with_and_without_datasets(tmp_path: Path, images, monkeypatch) -> None:
    """Without ``datasets``: one clear line naming the install. With it: a local dataset folder is read
    through datasets.load_dataset, and an id that cannot load is one clear line naming it."""
    proc = _run_cli_without("datasets", "laion", "--dataset", "x/y", "--teacher", "offline",
                            "--output-dir", str(tmp_path / "o"))
    assert "pip install datasets" in _one_line_error(proc)

    datasets = pytest.importorskip("datasets", reason="datasets is not installed: the with-datasets half needs it")
    from synth.inputs import rows_from_dataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # nothing written to ~/.cache
    proc = run_cli("laion", "--dataset", str(tmp_path / "no-such-dataset"), "--teacher", "offline",
                   "--output-dir", str(tmp_path / "o"))
    assert "cannot load dataset" in _one_line_error(proc)
    assert not (tmp_path / "o").exists()
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"path": str(p), "caption": f"c{i}"}) + "\n"
                                                for i, p in enumerate(images[:3])))
    rows = rows_from_dataset(str(folder), "train", limit=2)
    assert [(r.path, r.caption) for r in rows] == [(images[0], "c0"), (images[1], "c1")]


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
