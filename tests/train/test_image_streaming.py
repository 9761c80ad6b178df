"""The stage's images cached in memory or streamed from their files: same batches for the same seed,
bad files found at read time counted per source, and the dry run's memory line saying which."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from allava.schema import DataError
from tests.conftest import small_config_dict
from train.config import StageConfig, TrainConfig, _build, load_config
from train.data import Source, StageData, build_stage_data
from train.plan import format_plan, plan_stages
from train.run import main as run_main
from train.trainer import DistInfo, StageRunner

CAPTIONS = "ALLaVA-Caption-World.json"
TEXT = "ALLaVA-Text-World.json"


@pytest.fixture(scope="module")
def kit(world_root):
    """The world BPE and the tiny preset's image processor (no model, no downloads)."""
    from allava.chat import render_segments
    from allava.modeling import build_processor, load_preset
    from allava.schema import IMAGE_MARKER
    from allava.tokenizer import train_bpe_tokenizer
    from train.sources import read_source

    texts = [seg.text for name in (CAPTIONS, TEXT) for r in read_source(world_root / name).records[:200]
             for seg in render_segments(r.conversations)]
    preset = load_preset("tiny")
    tokenizer = train_bpe_tokenizer(texts, 1024)
    processor = build_processor(preset, tokenizer)
    return tokenizer, processor.image_processor, tokenizer.convert_tokens_to_ids(IMAGE_MARKER), preset.num_image_tokens


def _data(root: Path, kit, cache_mib: float, limit: float | None = None, skip_bad: bool = False) -> StageData:
    sources = [Source(str(root / CAPTIONS), 1.0, None, "allava", limit), Source(str(root / TEXT), 0.5, None, "allava", limit)]
    return build_stage_data(sources, *kit, max_length=256, seed=3, skip_bad=skip_bad, progress=False,
                            image_cache_mib=cache_mib)


def _runner(data: StageData, tmp_path: Path, workers: int = 0, rank: int = 0, world: int = 1) -> StageRunner:
    """A StageRunner around a one-weight model: only its batching is exercised."""
    stage = StageConfig("pretrain", [], global_batch_size=16, micro_batch_size=4, micro_batch_tokens=600)
    return StageRunner(torch.nn.Linear(1, 1), stage, data, tmp_path / "ckpt", tmp_path / "m.jsonl",
                       DistInfo(rank, world), "fp32", seed=3, save_every=100, keep=1, pad_id=0, num_workers=workers)


def _all_batches(runner: StageRunner) -> list[list[dict[str, torch.Tensor]]]:
    stream = runner._image_stream()
    return [runner._micro_batches(s, next(stream) if stream is not None else None) for s in range(runner.total_steps)]


def _assert_same(a: list[list[dict]], b: list[list[dict]]) -> None:
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b, strict=True):
        assert len(step_a) == len(step_b)
        for x, y in zip(step_a, step_b, strict=True):
            assert x.keys() == y.keys()
            assert all(torch.equal(x[k], y[k]) for k in x), [k for k in x if not torch.equal(x[k], y[k])]


@pytest.mark.parametrize("workers", [0, 2])
def test_cached_and_streamed_batches_are_identical(tmp_path, world_root, kit, workers):
    cached, streamed = _data(world_root, kit, 2048), _data(world_root, kit, 0)
    assert cached.pixel_values is not None and cached.images is None
    assert streamed.pixel_values is None and streamed.images is not None and len(streamed.images) == 160
    assert cached.stats == streamed.stats
    assert [(e.input_ids, e.labels, e.image) for e in cached.examples] == \
        [(e.input_ids, e.labels, e.image) for e in streamed.examples]
    a = _all_batches(_runner(cached, tmp_path / "a"))
    b = _all_batches(_runner(streamed, tmp_path / "b", workers))
    assert sum("pixel_values" in mb for step in a for mb in step) > 0
    _assert_same(a, b)


def test_streaming_keeps_each_ranks_share(tmp_path, world_root, kit, monkeypatch):
    """Two ranks stream exactly the rows the cached path gives them (no rank reads another's)."""
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, **kw: model)  # no group
    cached, streamed = _data(world_root, kit, 2048), _data(world_root, kit, 0)
    for rank in (0, 1):
        _assert_same(_all_batches(_runner(cached, tmp_path / f"c{rank}", rank=rank, world=2)),
                     _all_batches(_runner(streamed, tmp_path / f"s{rank}", rank=rank, world=2)))


@pytest.fixture
def damaged(tmp_path, world_root) -> tuple[Path, str]:
    """A copy of the world; returns it and one caption record's image path (relative)."""
    root = tmp_path / "world"
    root.mkdir()
    for name in (CAPTIONS, TEXT):
        shutil.copy(world_root / name, root / name)
    shutil.copytree(world_root / "images", root / "images")
    rec = json.loads((root / CAPTIONS).read_text())[5]
    return root, rec["image"]


def test_missing_at_build_is_counted_in_streaming_mode_too(damaged, kit):
    root, image = damaged
    (root / image).unlink()
    data = _data(root, kit, 0, limit=0.05)
    assert data.reports[0].missing_image == 1 and data.stats["skipped"] == 1
    assert "image file not found" in data.reports[0].examples[0]


def test_image_lost_after_build_is_counted_when_read(damaged, kit, tmp_path):
    root, image = damaged
    data = _data(root, kit, 0, limit=0.05)
    victim = next(i for i, e in enumerate(data.examples) if e.image is not None
                  and data.images.path(e.image) == (root / image).resolve())
    (root / image).write_bytes(b"\x89PNG not really")  # undecodable: only a read finds it
    batches = _all_batches(_runner(data, tmp_path / "r", workers=1))
    report = data.reports[0]
    assert (report.missing_image, report.bad) == (1, 1) and data.read_failures.keys() == {victim}
    assert "cannot decode image" in report.examples[0] and repr(data.examples[victim].rid) in report.examples[0]
    seen = sum(int(mb["input_ids"].shape[0]) for step in batches for mb in step)
    assert seen == 16 * len(batches) - 1  # the one record left out, not silently: counted above

    strict = _data(root, kit, 0)  # the file exists, so the build's stat passes
    with pytest.raises(DataError, match=rf"{CAPTIONS}, record '.*': cannot decode image .*{Path(image).name}"):
        _all_batches(_runner(strict, tmp_path / "s"))  # no threshold: the read stops the run, one DataError


def test_read_failures_are_counted_again_after_a_resume(damaged, kit, tmp_path):
    root, image = damaged
    data = _data(root, kit, 0, limit=0.05)
    (root / image).write_bytes(b"junk")
    runner = _runner(data, tmp_path / "r")
    stream = runner._image_stream()
    for step in range(runner.total_steps):
        runner._micro_batches(step, next(stream))
        runner.step = step + 1
    runner.save()
    fresh = _data(root, kit, 0, limit=0.05)  # the resumed process builds the stage again
    assert _runner(fresh, tmp_path / "r").try_resume()
    assert fresh.reports[0].missing_image == 1 and fresh.read_failures.keys() == data.read_failures.keys()


def test_read_failures_past_the_threshold_stop_naming_the_file(damaged, kit, tmp_path):
    root, _ = damaged
    data = _data(root, kit, 0, limit=0.05)
    for rec in json.loads((root / CAPTIONS).read_text())[:20]:  # 12.5% of the captions' images
        (root / rec["image"]).write_bytes(b"junk")
    with pytest.raises(DataError, match=rf"{CAPTIONS}: \d+ of 160 records bad .* above max_bad_fraction 0.05 "
                                        r"\(missing image \d+\)"):
        _all_batches(_runner(data, tmp_path / "r"))
    skip = _data(root, kit, 0, limit=None, skip_bad=True)
    _all_batches(_runner(skip, tmp_path / "k"))
    assert skip.reports[0].missing_image == 20


def test_cli_streaming_run_with_a_broken_image_is_one_line(damaged, tmp_path, capsys):
    root, _ = damaged
    for p in (root / "images").rglob("*.png"):  # every caption image: the first step reads one
        p.write_bytes(b"junk")
    d = small_config_dict(tmp_path / "out", root, steps=1)
    d.update(vision_pretrain=None, image_cache_mib=0, num_workers=0)
    d["stages"] = d["stages"][:1]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(d))
    # build-time stat passes (the files exist); the step's read fails
    assert run_main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and CAPTIONS in err[-1] and "cannot decode image" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_dry_run_says_what_the_loader_holds(world_root):
    d = small_config_dict(Path("/unused"), world_root)
    cfg = _build(TrainConfig, d, "test")
    cached = format_plan(cfg, plan_stages(cfg), "c", False)
    assert "160 distinct, 16.9MiB preprocessed at 96 px fp32: within image_cache_mib 2048" in cached
    cfg.image_cache_mib, cfg.num_workers = 1, 3
    streamed = format_plan(cfg, plan_stages(cfg), "c", False)
    assert "above image_cache_mib 1, so the loader reads them per step: at most 7 step(s) x 8 images" in streamed
    assert "num_workers 3, from the config" in streamed


@pytest.mark.parametrize("key, value, expected", [("num_workers", -1, "num_workers: expected an integer >= 0"),
                                                  ("image_cache_mib", "big", "image_cache_mib: expected a number")])
def test_bad_loader_settings_are_one_line(tmp_path, key, value, expected):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({key: value}))
    with pytest.raises(ValueError, match=expected):
        load_config(path)
