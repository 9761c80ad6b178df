"""Import of a released-layout (LLaVA code base) checkpoint, built here at tiny size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlavaForConditionalGeneration

from allava.modeling import build_model, load_preset
from allava.tokenizer import train_bpe_tokenizer
from allava.world import corpus
from tests.conftest import REPO


def _released_layout(model: LlavaForConditionalGeneration) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("model.vision_tower."):
            k = "model.vision_tower.vision_tower.vision_model." + k.removeprefix("model.vision_tower.")
        elif k.startswith("model.multi_modal_projector.linear_1."):
            k = "model.mm_projector.0." + k.rsplit(".", 1)[1]
        elif k.startswith("model.multi_modal_projector.linear_2."):
            k = "model.mm_projector.2." + k.rsplit(".", 1)[1]
        elif k.startswith("model.language_model."):
            k = "model." + k.removeprefix("model.language_model.")
        out[k] = v.contiguous()
    return out


@pytest.fixture(scope="module")
def released(tmp_path_factory, world_root):
    src = tmp_path_factory.mktemp("released")
    tok = train_bpe_tokenizer(corpus(world_root), 512)
    model = build_model(load_preset("tiny"), tok, random_init=True, seed=3).eval()
    save_file(_released_layout(model), str(src / "model.safetensors"))
    tok.save_pretrained(src)
    t = model.config.text_config
    (src / "config.json").write_text(json.dumps({
        "architectures": ["LlavaPhiForCausalLM"], "model_type": "llava_phi",
        "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
        "partial_rotary_factor": 0.5, "max_position_embeddings": t.max_position_embeddings,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad",
        "mm_hidden_size": 256, "mm_use_im_start_end": False,
    }))
    return src, model


def test_import_gives_identical_logits(released, tmp_path, world_root):
    from PIL import Image
    from transformers import AutoProcessor

    src, original = released
    proc = subprocess.run([sys.executable, "train/import_allava.py", str(src), "--output-dir", str(tmp_path / "hf")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    assert model.config.vision_feature_layer == -2 and model.config.vision_config.image_size == 96
    image = Image.open(world_root / "images/world_heldout_00160.png")
    inputs = processor(images=image, text="USER: <image>\nHow many shapes are in the image?\nASSISTANT:", return_tensors="pt")
    with torch.no_grad():
        a = original(**inputs).logits
        b = model(**inputs).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_import_rejects_foreign_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    proc = subprocess.run([sys.executable, "train/import_allava.py", str(tmp_path), "--output-dir", str(tmp_path / "o")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is not a released LLaVA-Phi checkpoint" in proc.stderr
    assert not (tmp_path / "o").exists()
