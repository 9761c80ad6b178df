"""Training: the HF folder it writes, exact resume, bad input, and the 2-process (gloo) path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import REPO, small_config_dict
from train.config import TrainConfig, _build
from train.pipeline import run_training


def _cfg(out: Path, world: Path, **over) -> TrainConfig:
    d = small_config_dict(out, world)
    d.update(over)
    return _build(TrainConfig, d, "test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, world_root) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_training(_cfg(out, world_root))
    return out


def test_output_is_a_plain_hf_folder(trained, world_root):
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(trained)
    processor = AutoProcessor.from_pretrained(trained)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "processor_config.json", "generation_config.json",
                 "eval_results.json", "metrics.jsonl", "loss.png"):
        assert (trained / name).is_file(), name
    assert processor.tokenizer.chat_template
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many shapes are in the image?"}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    image = Image.open(world_root / "images/world_heldout_00160.png")
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 9
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    results = json.loads((trained / "eval_results.json").read_text())
    assert results["heldout"]["n"] == 16 and "per_type" in results["heldout"]
    rows = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows} == {"vision", "pretrain", "finetune"}


def test_vision_tower_stays_frozen_in_llava_stages(trained):
    base = load_file(str(trained / "base" / "model.safetensors"))
    final = load_file(str(trained / "model.safetensors"))
    vision = [k for k in base if "vision_tower" in k]
    assert vision and all(torch.equal(base[k], final[k]) for k in vision)
    proj = [k for k in base if "multi_modal_projector" in k]
    assert any(not torch.equal(base[k], final[k]) for k in proj), "projector did not train"


def test_resume_matches_uninterrupted_run(tmp_path, world_root, trained):
    """Crash mid-stage (after step 3 of stage 1, checkpoint at step 2), resume, compare."""
    out = tmp_path / "crashy"
    shutil.copytree(trained / "base", out / "base")  # same starting point, skips stage 0
    cfg = _cfg(out, world_root)
    assert run_training(cfg, stop_after=("pretrain", 3)) is None
    # simulate losing the in-memory step 3: the latest checkpoint is step 2... or the stop save
    ckpts = sorted(p.name for p in (out / "checkpoints" / "pretrain").glob("step-*"))
    assert ckpts, "no checkpoint written"
    (out / "checkpoints" / "pretrain" / "latest").write_text("step-2")
    run_training(_cfg(out, world_root), resume=True)
    ref = load_file(str(trained / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    worst = max((ref[k].float() - got[k].float()).abs().max().item() for k in ref)
    assert worst <= 1e-5, f"resumed weights differ by {worst}"
    curve = lambda p: [(r["stage"], r["step"], r["loss"]) for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines()) if r["stage"] != "vision"]  # noqa: E731
    a, b = curve(trained), curve(out)
    assert [x[:2] for x in a] == [x[:2] for x in b], "loss curve has gaps or duplicates"
    assert max(abs(x[2] - y[2]) for x, y in zip(a, b, strict=True)) <= 1e-4


def test_micro_batch_split_does_not_change_the_step(tmp_path, world_root, trained):
    """Global batch 8 as 1 x 8, 4 x 2 or packed into <= 300 padded tokens (sorted by length, weighted by
    label tokens): same losses and weights."""
    finals, losses = [], []
    for micro, tokens in ((8, None), (2, None), (8, 300)):
        out = tmp_path / f"micro{micro}-{tokens}"
        shutil.copytree(trained / "base", out / "base")  # same start, stage 0 skipped
        d = small_config_dict(out, world_root, steps=2)
        d["precision"] = "fp32"
        d["eval"]["limit"] = 1
        for st in d["stages"]:
            st["micro_batch_size"], st["micro_batch_tokens"] = micro, tokens
        run_training(_build(TrainConfig, d, "test"))
        finals.append(load_file(str(out / "model.safetensors")))
        losses.append([json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()
                       if json.loads(x)["stage"] != "vision"])
    assert len(losses[0]) == 4
    assert all(max(abs(a - b) for a, b in zip(losses[0], other, strict=True)) <= 1e-5 for other in losses[1:]), losses
    worst = max((finals[0][k] - f[k]).abs().max().item() for f in finals[1:] for k in finals[0])
    changed = max((finals[0][k] - load_file(str(trained / "base" / "model.safetensors"))[k]).abs().max().item()
                  for k in finals[0] if "language_model" in k)
    assert changed > 1e-3, "the steps did not move the weights"
    # Adam's first steps move a weight by ~lr whatever its gradient's size, so float-level gradient
    # differences (another summation order) show up at ~1e-4 of lr 1e-3; a wrong weighting is ~lr
    assert worst <= 3e-4, f"micro-batch split changed the weights by {worst}"


def test_label_token_loss_matches_the_models_loss(trained):
    """Logits only where a label follows: the same loss and gradients as ``model(**batch).loss``."""
    from transformers import LlavaForConditionalGeneration

    from train.data import IGNORE_INDEX
    from train.trainer import label_token_loss

    model = LlavaForConditionalGeneration.from_pretrained(trained).float()
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (3, 20))
    ids[:, 2 : 2 + model.config.image_seq_length] = model.config.image_token_id
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 15:18], labels[1, 19], labels[2, 12:20] = ids[0, 15:18], ids[1, 19], ids[2, 12:20]
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    size = model.config.vision_config.image_size
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask, "pixel_values": torch.randn(3, 3, size, size)}
    grads = []
    for fn in (lambda: model(**batch).loss, lambda: label_token_loss(model, batch)):
        model.zero_grad()
        loss = fn()
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (ref, ref_g), (got, got_g) = grads
    assert abs(ref - got) <= 1e-5 * max(1.0, abs(ref)), (ref, got)
    assert len(ref_g) == len(got_g) > 0
    assert max((a - b).abs().max().item() for a, b in zip(ref_g, got_g, strict=True)) <= 1e-5


def test_cached_vision_features_give_the_pixel_paths_loss_and_gradients(trained):
    """The frozen tower run once (train/features.py): same loss and trainable gradients per step."""
    from transformers import LlavaForConditionalGeneration

    from train.data import IGNORE_INDEX
    from train.features import encoder_outputs_from_features, vision_features
    from train.trainer import label_token_loss

    model = LlavaForConditionalGeneration.from_pretrained(trained).float()
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    n_img = model.config.image_seq_length
    ids = torch.randint(5, 100, (2, 12 + n_img))
    ids[:, 1 : 1 + n_img] = model.config.image_token_id
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -4:] = ids[:, -4:]
    size = model.config.vision_config.image_size
    pixels = torch.rand(2, 3, size, size)
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    features = vision_features(model, pixels, None, progress=False)
    assert features.shape == (2, n_img, model.config.vision_config.hidden_size)
    # the LLaVA feature layer with CLS dropped, bit for bit (the earlier hand-written selection)
    with torch.no_grad():
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
    assert torch.equal(features, hidden[model.config.vision_feature_layer][:, 1:])
    results = []
    for use_cache in (False, True):
        model.zero_grad()
        if use_cache:
            loss = label_token_loss(model, {**batch, "mm_encoder_outputs": encoder_outputs_from_features(model, features)})
        else:
            loss = label_token_loss(model, {**batch, "pixel_values": pixels})
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (ref, ref_g), (got, got_g) = results
    assert abs(ref - got) <= 1e-5 * max(1.0, abs(ref)), (ref, got)
    assert set(ref_g) == set(got_g) and any("multi_modal_projector" in n for n in got_g)
    assert max((ref_g[n] - got_g[n]).abs().max().item() for n in ref_g) <= 1e-5
    with pytest.raises(ValueError, match="image tokens"):
        label_token_loss(model, {"input_ids": ids[:, n_img:], "labels": labels[:, n_img:],
                                 "mm_encoder_outputs": encoder_outputs_from_features(model, features)})


def _run_cli(args: list[str], cwd: Path = REPO, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train/run.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _write_cfg(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("missing_image", "image file not found"),
        ("corrupt_image", "cannot decode image"),
        ("malformed_json", "malformed JSON"),
        ("no_assistant", "no assistant"),
        ("image_in_text_only", "text-only record"),
    ],
)
def test_bad_input_names_file_and_record(tmp_path, world_root, damage, expected):
    data = tmp_path / "data"
    shutil.copytree(world_root, data)
    cap = data / "ALLaVA-Caption-World.json"
    records = json.loads(cap.read_text())
    victim = records[3]
    if damage == "missing_image":
        (data / victim["image"]).unlink()
    elif damage == "corrupt_image":
        (data / victim["image"]).write_bytes(b"\x89PNG not really")
    elif damage == "malformed_json":
        cap.write_text(cap.read_text()[:-20])
    elif damage == "no_assistant":
        victim["conversations"] = victim["conversations"][:1]
    elif damage == "image_in_text_only":
        del victim["image"]
    if damage in ("no_assistant", "image_in_text_only"):
        cap.write_text(json.dumps(records))
    d = small_config_dict(tmp_path / "out", data, steps=1)
    d["vision_pretrain"] = None  # user data has no scenes.jsonl: exercise the ALLaVA-4V loader itself
    cfg = _write_cfg(tmp_path / "c.yaml", d)
    proc = _run_cli(["--config", str(cfg)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "ALLaVA-Caption-World.json" in last and expected in last, last
    if damage != "malformed_json":
        assert repr(victim["id"]) in last
    assert "Traceback" not in proc.stderr
    if damage in ("missing_image", "corrupt_image"):
        ok = _run_cli(["--config", str(cfg), "--skip-bad", "--max-steps", "1"])
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert "'skipped': 1" in ok.stdout


def test_unknown_config_key_is_an_error(tmp_path, world_root):
    d = small_config_dict(tmp_path / "o", world_root)
    d["stages"][0]["lerning_rate"] = 1
    proc = _run_cli(["--config", str(_write_cfg(tmp_path / "c.yaml", d))])
    assert proc.returncode == 2 and "unknown keys ['lerning_rate']" in proc.stderr


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path, world_root, trained):
    """torchrun with 2 CPU processes (gloo DDP) trains the same global batches as one process."""
    # fp32 on both sides: the two splits pad differently (one process sorts the whole step by length,
    # each rank its half), which in bf16 alone moves weights by ~5e-3 after Adam's first steps
    single = tmp_path / "single"
    shutil.copytree(trained / "base", single / "base")
    d = small_config_dict(single, world_root)
    d["precision"], d["threads"] = "fp32", 1
    run_training(_build(TrainConfig, d, "test"))
    out = tmp_path / "ddp"
    shutil.copytree(trained / "base", out / "base")
    d = small_config_dict(out, world_root)
    d["precision"], d["threads"] = "fp32", 1
    cfg = _write_cfg(tmp_path / "ddp.yaml", d)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "train/run.py", "--config", str(cfg)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = load_file(str(single / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    worst = max((ref[k].float() - got[k].float()).abs().max().item() for k in ref)
    # label-token shares all-reduced over ranks == the single-process token mean; float order only
    # (a rank-mean instead of the token mean moves weights by ~lr = 1e-3)
    assert worst < 3e-4, worst
    curve = lambda p: [r["loss"] for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines()) if r["stage"] != "vision"]  # noqa: E731
    assert max(abs(a - b) for a, b in zip(curve(single), curve(out), strict=True)) <= 1e-4  # logged: global loss
