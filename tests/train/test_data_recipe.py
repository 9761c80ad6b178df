"""ALLaVA-3B's data recipe: each release read in its own format, bad records counted per source with a
threshold, the dry-run plan of both configs in the report's proportions, and the data-preparation
plan (printed only: nothing here downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from allava.schema import DataError, load_records
from tests.conftest import REPO
from train.config import load_config
from train.data_catalog import ANNOTATIONS, IMAGES, annotation
from train.plan import plan_stages
from train.recipe_fixtures import write_recipe_fixture
from train.run import main as run_main
from train.sources import FORMATS, read_source

CONFIGS = {"allava-3b": REPO / "train/configs/allava-3b.yaml", "longer": REPO / "train/configs/allava-3b-longer.yaml"}


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    """Every source at 1/1000 of its published size (enough records for whole global batches)."""
    root = tmp_path_factory.mktemp("recipe")
    write_recipe_fixture(root, scale=1e-3)
    return root


def _dry_run(capsys, config: Path, *extra: str) -> tuple[int, str, str]:
    rc = run_main(["--config", str(config), "--dry-run", *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _samples(stdout: str) -> dict[str, dict[str, int]]:
    """{stage: {source path: samples per epoch}} from the printed tables."""
    stages: dict[str, dict[str, int]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("stage "):
            current = stages.setdefault(line.split()[1].rstrip(":"), {})
        elif current is not None and line.startswith("  ") and line.split()[0].endswith(".json"):
            current[line.split()[0]] = int(line.split()[-2].replace(",", ""))
    return stages


def _write_cfg(tmp_path: Path, base: Path, **changes) -> Path:
    d = yaml.safe_load(base.read_text())
    d.update(changes)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


# -- the releases' formats ------------------------------------------------------------------------

def test_each_release_is_read_in_its_own_format(tmp_path):
    counts = write_recipe_fixture(tmp_path, scale=1e-4)
    for entry in ANNOTATIONS:
        read = read_source(tmp_path / entry.path, entry.format)
        assert len(read.records) == counts[entry.path] and read.report.bad == 0, entry.path
    evol = read_source(tmp_path / "allava_text/Evol-Instruct-GPT4-Turbo-143K.json", "allava").records
    assert evol[0].id.startswith("evol") and evol[0].image is None  # its id field is "idx"
    raw = json.loads((tmp_path / "openchat/sharegpt_gpt4.json").read_text())
    chat = read_source(tmp_path / "openchat/sharegpt_gpt4.json", "openchat").records
    assert "items" in raw[0] and raw[0]["model"] == "Model: GPT-4"
    assert [t.value for t in chat[0].conversations] == [t["value"] for t in raw[0]["items"]]
    assert all(r.image is None for r in chat)
    mix = read_source(tmp_path / "llava/llava_v1_5_mix665k.json", "llava_mix").records
    assert any(r.image is None for r in mix) and any(r.image and r.image.startswith("ocr_vqa/") for r in mix)
    cap = read_source(tmp_path / "sharegpt4v/sharegpt4v_instruct_gpt4-vision_cap100k.json", "sharegpt4v").records
    assert any(r.conversations[0].value.endswith("<image>") for r in cap)  # marker after the question
    assert {r.image.split("/")[0] for r in cap} >= {"coco", "sam", "llava"}


def test_allava_format_reads_what_the_schema_reads(tmp_path):
    """The default format is the old ALLaVA-4V reader: same records, same first-error message."""
    write_recipe_fixture(tmp_path, scale=1e-4)
    path = tmp_path / "allava_laion/ALLaVA-Caption-LAION-4V.json"
    assert read_source(path, "allava").records == load_records(path)[0]
    records = json.loads(path.read_text())
    del records[2]["conversations"]
    path.write_text(json.dumps(records))
    with pytest.raises(DataError) as old:
        load_records(path)
    with pytest.raises(DataError) as new:
        read_source(path, "allava")
    assert str(old.value) == str(new.value)


# -- the dry run ----------------------------------------------------------------------------------

def test_dry_run_plans_both_configs_in_the_reports_proportions(capsys, fixture_root):
    rc, out, err = _dry_run(capsys, CONFIGS["allava-3b"], "--data-root", str(fixture_root))
    assert rc == 0, err
    plan = _samples(out)
    assert set(plan) == {"pretrain", "finetune"}
    for stage, sources in plan.items():
        total = sum(sources.values())
        declared = {p: annotation(p).records for p in sources}
        for path, n in sources.items():  # each source's share of its stage, as in the full release
            assert abs(n / total - declared[path] / sum(declared.values())) < 0.01, (stage, path)
    assert "sharegpt4v/sharegpt4v_instruct_gpt4-vision_cap100k.json" in plan["pretrain"]
    assert "openchat/sharegpt_gpt4.json" in plan["pretrain"] and "openchat/sharegpt_gpt4.json" in plan["finetune"]
    assert "llava/llava_v1_5_mix665k.json" in plan["finetune"]
    assert "3 steps of 256" in out and "11 steps of 128" in out  # 915 // 256, 1,477 // 128

    rc, out_longer, err = _dry_run(capsys, CONFIGS["longer"], "--data-root", str(fixture_root))
    assert rc == 0, err
    longer = _samples(out_longer)
    assert longer["finetune"] == plan["finetune"]  # same mix per epoch, two epochs
    assert "2 epoch(s) -> 2,954 samples, 23 steps of 128" in out_longer
    assert "reused: weights from outputs/allava-3b/checkpoints/pretrain/done.safetensors" in out_longer
    assert "trained in this run: finetune:" in out_longer


def test_declared_sizes_match_the_allava_readme():
    """~1M PT and ~1.5M FT samples (3M FT for -Longer), from the releases' published counts."""
    pt, ft = plan_stages(load_config(CONFIGS["allava-3b"]), declared=True)
    assert 0.9e6 <= pt.samples <= 1.1e6 and 1.4e6 <= ft.samples <= 1.6e6
    assert pt.steps == pt.samples // 256 and ft.steps == ft.samples // 128
    pt_l, ft_l = plan_stages(load_config(CONFIGS["longer"]), declared=True)
    assert ft_l.samples == 2 * ft.samples and 2.8e6 <= ft_l.samples <= 3.2e6
    assert pt_l.steps == 0 and pt_l.samples == pt.samples


def test_dry_run_without_the_data_names_the_missing_files(capsys, tmp_path):
    rc, out, err = _dry_run(capsys, CONFIGS["allava-3b"], "--data-root", str(tmp_path))
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "8 data file(s) missing" in lines[0]
    assert "openchat/sharegpt_gpt4.json" in lines[0] and "prepare_data.py --list" in lines[0]


@pytest.mark.parametrize(
    "damage, file, summary",
    [
        ("missing_image", "llava_v1_5_mix665k.json", "missing image 1"),
        ("malformed", "sharegpt4v_instruct_gpt4-vision_cap100k.json", "malformed 1"),
    ],
)
def test_bad_records_are_counted_and_stop_past_the_threshold(capsys, tmp_path, damage, file, summary):
    root = tmp_path / "data"
    write_recipe_fixture(root, scale=1e-3, damage=[damage])
    # the config's 1%: counted, reported, not stopped
    rc, out, err = _dry_run(capsys, CONFIGS["allava-3b"], "--data-root", str(root))
    assert rc == 0, err
    assert f"bad in {file}: {summary}" in out
    # a stricter threshold: the same counts, then one line naming the file
    strict = _write_cfg(tmp_path, CONFIGS["allava-3b"], max_bad_fraction=0.0)
    rc, out, err = _dry_run(capsys, strict, "--data-root", str(root))
    assert rc == 2 and f"bad in {file}: {summary}" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and file in lines[0] and summary in lines[0]
    assert "above max_bad_fraction 0" in lines[0] and "Traceback" not in err


def test_a_file_in_another_format_than_declared_is_named(capsys, tmp_path, fixture_root):
    d = yaml.safe_load(CONFIGS["allava-3b"].read_text())
    d["stages"][0]["sources"][4]["format"] = "allava"  # OpenChat's file read as ALLaVA-4V
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(d))
    rc, out, err = _dry_run(capsys, cfg, "--data-root", str(fixture_root))
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert "sharegpt_gpt4.json" in line and "6 of 6 records bad" in line
    assert "look like the 'openchat' format, the config says 'allava'" in line


def test_an_unknown_format_name_is_a_config_error(capsys, tmp_path):
    d = yaml.safe_load(CONFIGS["allava-3b"].read_text())
    d["stages"][1]["sources"][2]["format"] = "parquet"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(d))
    rc, out, err = _dry_run(capsys, cfg)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "stages[1].sources[2].format: 'parquet'" in lines[0]
    assert all(name in lines[0] for name in FORMATS)


# -- the training path ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_text_kit(fixture_root):
    """A small BPE tokenizer and the tiny preset's image processor (no downloads, no model)."""
    from allava.chat import render_segments
    from allava.modeling import build_processor, load_preset
    from allava.schema import IMAGE_MARKER
    from allava.tokenizer import train_bpe_tokenizer

    texts = [seg.text for e in ANNOTATIONS if e.format != "openchat"
             for r in read_source(fixture_root / e.path, e.format).records[:20] for seg in render_segments(r.conversations)]
    preset = load_preset("tiny")
    tokenizer = train_bpe_tokenizer(texts, 512)
    processor = build_processor(preset, tokenizer)
    return tokenizer, processor.image_processor, tokenizer.convert_tokens_to_ids(IMAGE_MARKER), preset.num_image_tokens


def test_training_data_counts_bad_records_per_source(tmp_path, tiny_text_kit):
    from train.data import Source, build_stage_data

    root = tmp_path / "data"
    write_recipe_fixture(root, scale=1e-4, damage=["missing_image"])
    mix, chat = root / "llava/llava_v1_5_mix665k.json", root / "openchat/sharegpt_gpt4.json"

    def build(limit: float | None, skip_bad: bool = False):
        sources = [Source(str(mix), 1.0, str(root), "llava_mix", limit), Source(str(chat), 1.0, None, "openchat", limit)]
        return build_stage_data(sources, *tiny_text_kit, max_length=8192, seed=0, skip_bad=skip_bad, progress=False)

    data = build(0.05)  # 1 of 68 records: counted, under the threshold
    mix_report, chat_report = data.reports
    assert (mix_report.records, mix_report.missing_image, mix_report.bad) == (68, 1, 1) and chat_report.bad == 0
    assert data.stats["examples"] == 67 + 1 and data.stats["skipped"] == 1
    assert sum(e.image is None for e in data.examples) == 1 + 4  # OpenChat + the mix's text-only records
    with pytest.raises(DataError, match=r"llava_v1_5_mix665k\.json: 1 of 68 records bad .*\(missing image 1\)"):
        build(0.01)
    with pytest.raises(DataError, match="record 'ocr_missing': image file not found"):
        build(None)  # no threshold: the first bad record stops, as before
    assert build(None, skip_bad=True).stats["skipped"] == 1


def test_reused_stage_without_its_checkpoint_is_one_line(capsys, tmp_path, fixture_root):
    d = yaml.safe_load(CONFIGS["longer"].read_text())
    d.update(preset="tiny", random_init=True, deepspeed=None, gradient_checkpointing=False, precision="fp32",
             output_dir=str(tmp_path / "out"), data_root=str(fixture_root))
    d["stages"][0]["reuse_checkpoint"] = str(tmp_path / "nowhere/done.safetensors")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(d))
    rc = run_main(["--config", str(cfg)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: ") and "nowhere/done.safetensors" in err[-1]
    assert "reuse_checkpoint" in err[-1] and "run that config first" in err[-1]


# -- data preparation -----------------------------------------------------------------------------

def test_prepare_data_lists_every_source_without_network(capsys, monkeypatch):
    import urllib.request

    import huggingface_hub

    def no_network(*a, **k):
        raise AssertionError("--list must not download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    from train.prepare_data import main as prepare_main

    assert prepare_main(["--list", "--data-root", "/data/x"]) == 0
    out = capsys.readouterr().out
    for repo, name in [("FreedomIntelligence/ALLaVA-4V", "allava_laion/ALLaVA-Caption-LAION-4V.json"),
                       ("FreedomIntelligence/ALLaVA-4V", "allava_text/Evol-Instruct-GPT4-Turbo-143K.json"),
                       ("openchat/openchat_sharegpt4_dataset", "sharegpt_gpt4.json"),
                       ("Lin-Chen/ShareGPT4V", "sharegpt4v_instruct_gpt4-vision_cap100k.json"),
                       ("liuhaotian/LLaVA-Instruct-150K", "llava_v1_5_mix665k.json"),
                       ("Vision-Flan/vision-flan_191-task_1k", "image_191-task_1k.zip")]:
        assert f"hf://datasets/{repo}/{name}" in out, name
    assert "/data/x/llava/llava_v1_5_mix665k.json" in out and "images.cocodataset.org/zips/train2017.zip" in out
    assert "by hand" in out and "sam/images" in out and "ocr_vqa/images" in out


def test_catalog_matches_the_configs():
    for f in [a.fetch for a in ANNOTATIONS] + list(IMAGES):
        if f.hub_repo:
            assert f.dest.endswith(f.hub_file), f.name  # hf_hub_download keeps the repo's sub-folder
    for cfg_path in CONFIGS.values():
        cfg = load_config(cfg_path)
        for stage in cfg.stages:
            for s in stage.sources:
                entry = annotation(s.path)
                assert entry is not None and entry.format == s.format, s.path
                assert (s.image_root == ".") == bool(entry.image_dirs), s.path  # releases' paths are root-relative


def test_download_lands_and_extracts_where_the_records_point(tmp_path, monkeypatch):
    """--download's bookkeeping with the network replaced: hub files keep their sub-folder, archives
    are extracted where the records' image paths expect them, and a second run does nothing."""
    import zipfile

    import train.prepare_data as prep

    fetched: list[str] = []

    def fake_hub(f, root):
        path = root / f.dest
        path.parent.mkdir(parents=True, exist_ok=True)
        if f.unzip_to:
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("images_191task_1k/VQA-E+task_0_0.jpg", b"jpeg")
        else:
            path.write_text("[]")
        fetched.append(f.name)
        return path

    monkeypatch.setattr(prep, "_download_hub", fake_hub)
    monkeypatch.setattr(prep, "_download_url", lambda f, root: pytest.fail("no URL item was asked for"))
    names = ["openchat-sharegpt4", "vision-flan-images", "sam-images"]
    assert prep.main(["--download", "--data-root", str(tmp_path), "--only", *names]) == 0
    assert (tmp_path / "openchat/sharegpt_gpt4.json").is_file()
    assert (tmp_path / "allava_vflan/images/images_191task_1k/VQA-E+task_0_0.jpg").is_file()
    assert not (tmp_path / "allava_vflan/images/image_191-task_1k.zip").exists()  # archive removed
    assert fetched == ["openchat-sharegpt4", "vision-flan-images"]  # SAM is a manual step
    assert prep.main(["--download", "--data-root", str(tmp_path), "--only", *names]) == 0
    assert fetched == ["openchat-sharegpt4", "vision-flan-images"]
    assert prep.main(["--download", "--data-root", str(tmp_path), "--only", "nope"]) == 2


def test_prepare_data_runs_as_the_readme_types_it():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "train/prepare_data.py", "--list"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "data root: data/allava-3b" in proc.stdout, proc.stderr[-1500:]
