"""A full disk, for every stage that writes: one line naming the output, the space it needed and what
is free, exit 4 (allava/cli.py), and nothing half-written left behind.

The disk is a real one: a 2 MiB tmpfs mounted for the test (CI runs as root; elsewhere the tests skip
and say why), so every library meets a genuine ENOSPC or short write, as on a user's full disk, and the
error classification (allava/fileio.py) is tested against what the libraries really raise.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from allava.cli import EXIT_DISK_FULL, guard
from allava.fileio import DiskFullError, atomic_path, is_disk_full, write_text_atomic

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def _mount(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root, as CI has): {(p.stderr or p.stdout).strip()}")


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An empty 2 MiB filesystem."""
    mnt = tmp_path / "small"
    _mount(mnt, "2m")
    try:
        yield mnt
    finally:
        _umount(mnt)


def _shrink_to_fit(mnt: Path, spare: int) -> None:
    """Resize the tmpfs to what it holds plus ``spare`` bytes (rounded up to pages)."""
    used = shutil.disk_usage(mnt).used
    size = (used + spare + 4095) // 4096 * 4096
    p = subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_error_line(err: str, path: Path | str) -> str:
    """The stderr of a command that hit a full disk: no traceback, exactly one 'error:' line, naming
    ``path``, the space needed and what was free."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    line = lines[0]
    assert str(path) in line and "no space left on device" in line, line
    assert "needed" in line and "MiB free" in line, line
    return line


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# -- the mechanism -------------------------------------------------------------------------------------


def test_atomic_write_on_full_disk_names_file_and_leaves_nothing(small_fs: Path) -> None:
    target = small_fs / "out" / "big.txt"
    with pytest.raises(DiskFullError) as info:
        write_text_atomic(target, "x" * (3 * MiB))
    err = info.value
    assert err.errno == errno.ENOSPC and err.path == target
    msg = str(err)
    assert msg.startswith(f"{target}: no space left on device (needed >") and "MiB free)" in msg
    assert float(msg.split("(needed >")[1].split(" MiB")[0]) >= 1.5  # what it had written: a lower bound
    assert _listing(small_fs) == []  # no temp file, and no folder this write created


def test_numpy_short_write_counts_as_full_disk(small_fs: Path) -> None:
    """numpy's tofile (the GGUF writer's) loses errno: "N requested and M written"."""
    import numpy as np

    with pytest.raises(DiskFullError) as info, atomic_path(small_fs / "a.bin", needed=4 * MiB) as tmp, \
            open(tmp, "wb") as f:
        np.zeros(MiB, dtype=np.float32).tofile(f)
    assert "needed ~4.0 MiB" in str(info.value)
    assert _listing(small_fs) == []


def test_other_errors_are_not_disk_full(tmp_path: Path) -> None:
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("file write failed"), tmp_path)  # a short write with room left
    assert is_disk_full(RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))


def test_guard_prints_one_line_and_exits_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def main() -> int:
        raise DiskFullError(tmp_path / "x", 5 * MiB)

    assert guard(main) == EXIT_DISK_FULL
    _one_error_line(capsys.readouterr().err, tmp_path / "x")
    with pytest.raises(ValueError):
        guard(lambda: (_ for _ in ()).throw(ValueError("a bug keeps its traceback")))


# -- export --------------------------------------------------------------------------------------------


def test_to_gguf_cli_full_disk(small_fs: Path, tiny_ckpt: Path) -> None:
    """The issue's case, as the user runs it: refused up front from the exact plan, no empty folder."""
    p = _run("export/to_gguf.py", str(tiny_ckpt), "--outdir", str(small_fs / "gguf"), "--outtype", "f32")
    assert p.returncode == EXIT_DISK_FULL, p.stderr
    line = _one_error_line(p.stderr, small_fs / "gguf" / "F32")
    assert "needed ~" in line
    assert _listing(small_fs) == []


def test_to_gguf_full_disk_while_writing(small_fs: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Without the up-front check the writer itself fills the disk (numpy's short write): same line,
    same cleanup, including the output folders this run created."""
    import export.to_gguf as to_gguf

    monkeypatch.setattr(to_gguf, "ensure_space", lambda path, needed: None)
    assert to_gguf.main([str(tiny_ckpt), "--outdir", str(small_fs / "a" / "gguf"), "--outtype", "f32"]) == EXIT_DISK_FULL
    _one_error_line(capsys.readouterr().err, small_fs / "a" / "gguf" / "F32")
    assert _listing(small_fs) == []


def test_to_gguf_mmproj_only_full_disk(small_fs: Path, tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export.to_gguf import main

    out = small_fs / "x" / "mmproj.gguf"
    assert main([str(tiny_ckpt), "--mmproj-only", str(out), "--mmproj-outtype", "f32"]) == EXIT_DISK_FULL
    _one_error_line(capsys.readouterr().err, out)
    assert _listing(small_fs) == []


def test_to_onnx_full_disk(small_fs: Path, tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export.to_onnx import main

    out = small_fs / "exports" / "onnx"
    assert main([str(tiny_ckpt), "--outdir", str(out)]) == EXIT_DISK_FULL
    _one_error_line(capsys.readouterr().err, out)
    assert _listing(small_fs) == []  # no staging folder, no half export, no empty parent


def test_to_coreml_full_disk(small_fs: Path, tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("coremltools")
    from export.to_coreml import main

    out = small_fs / "coreml" / "FP16"
    assert main([str(tiny_ckpt), "--outdir", str(out), "--verify", "0"]) == EXIT_DISK_FULL
    _one_error_line(capsys.readouterr().err, out)
    assert _listing(small_fs) == []


# -- quantize ------------------------------------------------------------------------------------------


def test_quantize_onnx_full_disk_leaves_export_as_it_was(tmp_path: Path, tiny_ckpt: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from export.to_onnx import export_onnx
    from quantize.run import main

    mnt = tmp_path / "fs"
    _mount(mnt, "64m")
    try:
        export_onnx(tiny_ckpt, mnt / "onnx", ["fp32"])
        before = _listing(mnt)
        _shrink_to_fit(mnt, MiB)  # the INT8 graphs need several MiB
        capsys.readouterr()
        assert main(["--format", "onnx", "--types", "int8", "--export", str(mnt / "onnx")]) == EXIT_DISK_FULL
        _one_error_line(capsys.readouterr().err, mnt / "onnx" / "variants" / "INT8")
        assert _listing(mnt) == before  # no INT8 graph, manifest or staging folder
    finally:
        _umount(mnt)


def test_quantize_gguf_full_disk(tmp_path: Path, gguf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp", reason="llama_cpp is not importable: run scripts/build_llama_cpp.sh")
    from quantize.run import main

    mnt = tmp_path / "fs"
    _mount(mnt, "64m")
    try:
        shutil.copytree(gguf_dir / "F32", mnt / "gguf" / "F32")
        before = _listing(mnt)
        _shrink_to_fit(mnt, MiB // 2)
        capsys.readouterr()
        assert main(["--format", "gguf", "--types", "q8_0", "--export", str(mnt / "gguf")]) == EXIT_DISK_FULL
        _one_error_line(capsys.readouterr().err, mnt / "gguf" / "Q8_0")
        assert _listing(mnt) == before
    finally:
        _umount(mnt)


def test_quantize_gptq_full_disk_leaves_no_folder(small_fs: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """GPTQ's own run is minutes; the disk filling while GPTQModel saves is stood in for by the OSError
    it raises, to check the quantizer's wrapper: the line, exit 4, no partial or empty folder."""
    pytest.importorskip("gptqmodel")
    import quantize.gptq_quantizer as gq

    def fill(ck, outdir: Path, *args: object) -> Path:
        partial = outdir.with_name(outdir.name + gq.PARTIAL_SUFFIX)
        partial.mkdir(parents=True)
        shutil.rmtree(partial)  # what _quantize_into does on any error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gq, "_quantize_into", fill)
    calib = small_fs.parent / "calib.json"
    calib.write_text("[]")
    out = small_fs / "gptq" / "W4G128"
    assert gq.main([str(tiny_ckpt), "--outdir", str(out), "--calibration", str(calib)]) == EXIT_DISK_FULL
    _one_error_line(capsys.readouterr().err, out)
    assert _listing(small_fs) == []


# -- train ---------------------------------------------------------------------------------------------


def test_training_checkpoint_full_disk_keeps_latest(small_fs: Path) -> None:
    """A checkpoint that does not fit: the temp folder goes, 'latest' still names the previous one."""
    from types import SimpleNamespace

    import torch

    from train.trainer import StageRunner

    ckpts = small_fs / "checkpoints" / "pt"
    (ckpts / "step-1").mkdir(parents=True)
    (ckpts / "step-1" / "trainable.safetensors").write_bytes(b"x")
    (ckpts / "latest").write_text("step-1")
    model = torch.nn.Linear(1024, 1024)  # 4 MiB of weights, 12 with Adam's moments: over the 2 MiB disk
    opt = torch.optim.AdamW(model.parameters())
    runner = SimpleNamespace(
        engine=None, dist=SimpleNamespace(is_main=True), dir=ckpts, step=2, total_steps=4, keep=2, model=model,
        optimizer=opt, scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        stage=SimpleNamespace(name="pt", global_batch_size=1), data=SimpleNamespace(read_failures={}))
    runner._trainable_state = lambda: StageRunner._trainable_state(runner)
    runner._write_checkpoint = lambda tmp: StageRunner._write_checkpoint(runner, tmp)
    with pytest.raises(DiskFullError) as info:
        StageRunner.save(runner)
    assert info.value.path == ckpts / "step-2"
    assert (ckpts / "latest").read_text() == "step-1"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-1"]


# -- synth ---------------------------------------------------------------------------------------------


def test_synth_journal_stays_consistent_on_full_disk(small_fs: Path) -> None:
    from synth.journal import Journal, read_journal

    journal = Journal(small_fs / "out" / "journal.jsonl")
    journal.open()
    try:
        journal.append({"key": "a", "status": "response", "text": "first"})
        before = journal.path.read_bytes()
        filler = small_fs / "filler"
        free = shutil.disk_usage(small_fs).free
        filler.write_bytes(b"\0" * (free - 2048))  # leave less than the next line
        with pytest.raises(DiskFullError) as info:
            journal.append({"key": "b", "status": "response", "text": "y" * 64 * 1024})
        assert info.value.path == journal.path
        assert journal.path.read_bytes() == before  # the torn line was cut back
        filler.unlink()
        journal.append({"key": "c", "status": "response", "text": "after"})  # a rerun carries on
    finally:
        journal.close()
    state = read_journal(journal.path)
    assert sorted(state.responses) == ["a", "c"] and state.torn_lines == 0


def test_synth_cli_full_disk_exit_4(small_fs: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import synth.cli as cli

    def full(args: object) -> int:
        raise DiskFullError(small_fs / "journal.jsonl", at_least=True, needed=70_000)

    monkeypatch.setattr(cli, "run", full)
    assert cli.main(["laion", "--images", str(small_fs), "--teacher", "offline", "--output-dir",
                     str(small_fs / "o")]) == EXIT_DISK_FULL
    line = _one_error_line(capsys.readouterr().err, small_fs / "journal.jsonl")
    assert "rerun the same command to resume" in line


# -- bench ---------------------------------------------------------------------------------------------


def test_bench_results_full_disk_keep_old_files(small_fs: Path) -> None:
    from bench.harness import report

    out = small_fs / "bench"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"old": True}))
    with pytest.raises(DiskFullError) as info:
        report.write_json({"variants": ["x" * 3 * MiB]}, out)
    assert info.value.path == out / "results.json"
    assert json.loads((out / "results.json").read_text()) == {"old": True}
    assert _listing(small_fs) == ["bench", "bench/results.json"]


def test_atomic_path_gives_the_files_an_open_would(tmp_path: Path):
    """mkstemp makes 0600 files; a result written through atomic_path gets the umask's mode, as open()
    would give it (bench results, manifests and exports are read by other users and tools)."""
    from allava.fileio import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out" / "r.json") as tmp:
            tmp.write_text("{}")
        assert (tmp_path / "out" / "r.json").stat().st_mode & 0o777 == 0o644
        with atomic_path(tmp_path / "run.sh") as tmp:
            tmp.write_text("#!/bin/sh\n")
            tmp.chmod(0o755)  # a mode the writer set itself is kept
        assert (tmp_path / "run.sh").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)
