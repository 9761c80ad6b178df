"""GPTQ: quantize/gptq_quantizer.py on the tiny checkpoints, the folder it writes, calibration, bad input.

What users rely on: the folder is a transformers model (plain ``from_pretrained`` + generate with an
image), only the language model's linears are quantized, calibration is seeded and carries the
images, bad input fails with one line naming the file, and a failed run leaves nothing half-made.
The trained default's accuracy after 4-bit quantization is checked against its full precision.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HELDOUT, REPO, TRAINED, needs_trained

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None,
                                reason="gptqmodel is not installed: pip install 'allava-edge[gptq]'")


def _quantize(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "quantize/run.py", "--format", "gptq", *args], cwd=REPO,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def w4(tiny_ckpt: Path, world_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gptq") / "W4G128"
    p = _quantize(str(tiny_ckpt), "--outdir", str(out), "--bits", "4", "--group-size", "128",
                  "--calibration", str(world_root / "ALLaVA-Instruct-World.json"), "--n-samples", "16")
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_folder_is_a_gptq_transformers_model(w4: Path):
    from safetensors import safe_open

    from allava.variant import Manifest

    cfg = json.loads((w4 / "config.json").read_text())
    q = cfg["quantization_config"]
    assert (q["quant_method"], q["bits"], q["group_size"], q["desc_act"], q["sym"]) == ("gptq", 4, 128, False, True)
    assert q.get("checkpoint_format", q.get("format")) == "gptq"  # v1: what vLLM/transformers load
    for name in ("processor_config.json", "tokenizer.json", "chat_template.jinja", "generation_config.json"):
        assert (w4 / name).is_file(), name
    man = Manifest.read(w4)
    assert (man.format, man.precision) == ("gptq", "W4G128")
    assert man.extra["calibration"]["kind"] == "multimodal" and man.extra["calibration"]["n_samples"] == 16
    assert 0 < man.lm_bytes < man.total_bytes
    with safe_open(str(w4 / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        quantized = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".qweight")}
        # exactly the language model's linear layers: 4 layers x (q, k, v, dense, fc1, fc2)
        assert len(quantized) == 24 and all(".language_model.layers." in k for k in quantized)
        assert not any(k.endswith(".qweight") for k in keys if "vision" in k or "projector" in k or "lm_head" in k)
        one = sorted(quantized)[0]
        dtypes = {s: f.get_slice(f"{one}.{s}").get_dtype() for s in ("qweight", "qzeros", "scales", "g_idx")}
        assert dtypes == {"qweight": "I32", "qzeros": "I32", "scales": "F16", "g_idx": "I32"}
        dense = {f.get_slice(k).get_dtype() for k in keys if not k.endswith(("qweight", "qzeros", "g_idx"))}
        assert dense == {"F16"}  # vision, projector, embeddings, norms, biases: stored in half precision


def test_plain_from_pretrained_generates_with_an_image(w4: Path):
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from export.parity import synthetic_prompts

    p = synthetic_prompts(1, 96, seed=3)[0]
    model = LlavaForConditionalGeneration.from_pretrained(w4, dtype=torch.bfloat16)
    processor = AutoProcessor.from_pretrained(w4)
    inputs = processor(images=p.image, text=p.prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5 or out[0, -1] == processor.tokenizer.eos_token_id
    fc1 = model.model.language_model.layers[0].mlp.fc1
    assert type(fc1) is not torch.nn.Linear and hasattr(fc1, "qweight")  # a GPTQModel kernel module
    assert type(model.model.multi_modal_projector.linear_1) is torch.nn.Linear


def test_chat_template_from_messages(w4: Path, tiny_ckpt: Path):
    """The folder's users render prompts with ``AutoProcessor.apply_chat_template`` (issue 25): from messages
    with an image part and a text part it gives the checkpoint's prompt, the one PyTorch is fed, and the same ids."""
    from transformers import AutoProcessor

    from export.parity import synthetic_prompts
    from tests.export.test_onnx_transformersjs import messages_of, question_of

    ours, ck = AutoProcessor.from_pretrained(w4), AutoProcessor.from_pretrained(tiny_ckpt)
    for p in synthetic_prompts(4, 96, seed=5):
        msgs = messages_of(question_of(p.prompt))
        text = ours.apply_chat_template(msgs, add_generation_prompt=True)
        assert text == ck.apply_chat_template(msgs, add_generation_prompt=True) == p.prompt
        a = ours(images=p.image, text=text, return_tensors="np")
        b = ck(images=p.image, text=text, return_tensors="np")
        assert a["input_ids"].tolist() == b["input_ids"].tolist()
        assert (a["pixel_values"] == b["pixel_values"]).all()


def test_calibration_is_seeded_and_carries_images(world_root: Path, tiny_ckpt: Path):
    from transformers import AutoProcessor

    from quantize.gptq_calibration import CalibrationSpec, build_samples, choose_records

    data = world_root / "ALLaVA-Instruct-World.json"
    a = [r.id for r in choose_records(CalibrationSpec(data, world_root, 8, seed=1))]
    b = [r.id for r in choose_records(CalibrationSpec(data, world_root, 8, seed=1))]
    c = [r.id for r in choose_records(CalibrationSpec(data, world_root, 8, seed=2))]
    assert a == b and a != c and len(set(a)) == 8
    processor = AutoProcessor.from_pretrained(tiny_ckpt)
    mm = build_samples(CalibrationSpec(data, world_root, 2, seed=1), processor)
    tx = build_samples(CalibrationSpec(data, world_root, 2, seed=1, text_only=True), processor)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert all("pixel_values" in s and (s["input_ids"] == image_id).sum() == 9 for s in mm)
    assert all("pixel_values" not in s and (s["input_ids"] == image_id).sum() == 0 for s in tx)


@pytest.mark.parametrize(("case", "expect"), [
    ("no_config", "config.json"),
    ("outdir_other", "other content"),
    ("bad_calibration", "not ALLaVA-4V calibration data"),
    ("missing_image", "not found"),
    ("bad_precision", "no precision"),
    ("bits_3", "4 or 8 bits"),
    ("not_llava", "unsupported architecture"),
])
def test_bad_input_one_line_nothing_written(case: str, expect: str, tiny_ckpt: Path, world_root: Path, tmp_path: Path):
    ckpt, out = tiny_ckpt, tmp_path / "out"
    calib = world_root / "ALLaVA-Instruct-World.json"
    extra: list[str] = []
    if case == "no_config":
        ckpt = tmp_path / "ckpt"
        shutil.copytree(tiny_ckpt, ckpt)
        (ckpt / "config.json").unlink()
    elif case == "outdir_other":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "bad_calibration":
        calib = tmp_path / "bad.json"
        calib.write_text('[{"id": 1}]')
    elif case == "missing_image":
        calib = tmp_path / "calib.json"
        calib.write_text(json.dumps([{"id": "a", "image": "images/nope.png",
                                      "conversations": [{"from": "human", "value": "<image>\nHi"},
                                                        {"from": "gpt", "value": "Hello"}]}]))
        extra = ["--images", str(tmp_path)]
    elif case == "bad_precision":
        extra = ["--precision", "w3g7"]
    elif case == "bits_3":
        extra = ["--bits", "3"]
    elif case == "not_llava":
        ckpt = tmp_path / "ckpt"
        shutil.copytree(tiny_ckpt, ckpt)
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg["model_type"] = "qwen2_vl"
        (ckpt / "config.json").write_text(json.dumps(cfg))
    p = _quantize(str(ckpt), "--outdir", str(out), "--calibration", str(calib), "--n-samples", "2", *extra)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and expect in lines[0] and "Traceback" not in p.stderr
    if case == "outdir_other":
        assert sorted(x.name for x in out.iterdir()) == ["notes.txt"]
    else:
        assert not out.exists()
    assert not out.with_name("out.partial").exists()


def test_failed_run_keeps_the_previous_variant(w4: Path, tiny_ckpt: Path, world_root: Path, tmp_path: Path,
                                               monkeypatch):
    """A crash after quantizing (here: in the fp16 rewrite) removes the partial folder and leaves the
    existing variant exactly as it was."""
    import quantize.gptq_quantizer as gq
    from quantize.gptq_calibration import CalibrationSpec

    out = tmp_path / "W4G128"
    shutil.copytree(w4, out)
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    def crash(folder: Path) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(gq, "store_dense_in_fp16", crash)
    with pytest.raises(OSError, match="simulated"):
        gq.quantize_gptq(tiny_ckpt, out, 4, 128, calibration=CalibrationSpec(
            world_root / "ALLaVA-Instruct-World.json", world_root, 2), threads=1)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert not out.with_name(out.name + ".partial").exists()


@pytest.mark.slow
@needs_trained
def test_trained_default_w4_accuracy_and_parity(tmp_path: Path):
    """The acceptance figures: 4-bit GPTQ (group 128, multimodal calibration) of the trained default
    keeps held-out exact match within 1 point of float32 on 400 questions (measured: -0.25, 99.5%
    same answers), and gives PyTorch's greedy tokens on >= 95% of 50 held-out prompts of 32 tokens (README: 50/50 on
    the AVX-512 kind, 19/20 on the AVX2-only kind; a divergence only at a PyTorch near-tie, top-2 gap < 1e-2,
    counts as the same: check.py's criterion).
    check.py exits 0 only when the variant meets its README promise (export/check.py PROMISES)."""
    out = tmp_path / "W4G128"
    p = _quantize(str(TRAINED), "--outdir", str(out), "--bits", "4",
                  "--calibration", str(HELDOUT.parent / "ALLaVA-Instruct-World.json"))
    assert p.returncode == 0, p.stderr[-3000:]
    chk = subprocess.run([sys.executable, "export/check.py", str(TRAINED), str(out), "-n", "50", "--tokens", "32",
                          "--accuracy", "400", "--quiet", "--heldout", str(HELDOUT)],
                         cwd=REPO, capture_output=True, text=True)
    assert chk.returncode == 0, chk.stderr[-3000:]
    summary = json.loads((out / "manifest.json").read_text())["parity"]["summary"]
    assert summary["heldout_n"] == 400
    print({k: summary[k] for k in ("heldout_exact_match", "heldout_reference", "heldout_delta", "heldout_same_answers")})
    assert abs(summary["heldout_delta"]) <= 1.0, summary
    assert summary["heldout_same_answers"] >= 0.95, summary
    assert summary["n_prompts"] == 50 and summary["greedy_exact_or_tie_rate"] >= 0.95, summary


def test_8bit_variant_runs_with_an_8bit_kernel(tiny_ckpt: Path, world_root: Path, tmp_path: Path):
    from export.parity import synthetic_prompts
    from runtimes import load_runtime

    out = tmp_path / "W8G128"
    p = _quantize(str(tiny_ckpt), "--outdir", str(out), "--precision", "w8g128",
                  "--calibration", str(world_root / "ALLaVA-Instruct-World.json"), "--n-samples", "4")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["quantization_config"]["bits"] == 8
    prompt = synthetic_prompts(1, 96, seed=5)[0]
    with load_runtime(out, threads=1) as rt:
        assert rt.kernel == "gptq_torch_int8" and rt.kernel_class() == "TorchInt8Linear"
        g = rt.generate(prompt.image, prompt.prompt, 6, ignore_eos=True)
        assert len(g.token_ids) == 6 and g.timings.decode_tok_s > 0
