"""Import of a released-layout (LLaVA code base) checkpoint, built here at tiny size.

The released names are not taken from this file's own reverse mapping alone: tests/train/data/
allava_phi2_weight_names.txt lists the parameter names of FreedomIntelligence/ALLaVA-Phi2-2_7B as the
ALLaVA code defines them (provenance in its header), and the mapping must turn exactly those names into
exactly the parameters of transformers' LlavaForConditionalGeneration at ALLaVA-3B's shape; the tiny
"released" folder the logits test imports must use the same names, at the tiny model's depths.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, PhiConfig

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


RELEASED_NAMES = Path(__file__).parent / "data" / "allava_phi2_weight_names.txt"


def released_names() -> list[str]:
    """The released ALLaVA-Phi2 checkpoint's parameter names (the fixture, comments dropped)."""
    return [line for line in RELEASED_NAMES.read_text().splitlines() if line and not line.startswith("#")]


def test_mapping_turns_the_released_names_into_the_transformers_model():
    """Every released name maps (none dropped as unknown), no two onto one, and the mapped set is exactly
    LlavaForConditionalGeneration's parameters at ALLaVA-3B's shape (built on the meta device: no memory)."""
    from allava.released import map_key

    names = released_names()
    assert len(names) == 847 and len(set(names)) == len(names)
    mapped = {n: map_key(n) for n in names}
    assert not [n for n, m in mapped.items() if not m], "released names the import would reject or drop"
    assert len(set(mapped.values())) == len(names), "two released names map onto one parameter"
    preset = load_preset("allava-3b")
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=preset.image_size, patch_size=preset.patch_size, **preset.vision),
        text_config=PhiConfig(**preset.text), multimodal_projector_bias=True, tie_word_embeddings=False,
        vision_feature_layer=preset.vision_feature_layer, projector_hidden_act=preset.projector_hidden_act,
    )
    with torch.device("meta"):
        target = set(LlavaForConditionalGeneration(cfg).state_dict())
    got = set(mapped.values())
    assert got == target, {"not in the model": sorted(got - target)[:5], "never filled": sorted(target - got)[:5]}


def test_tiny_released_folder_uses_the_released_names(released):
    """The folder the logits test imports holds the release's names (at the tiny model's 4 + 4 layers)."""
    src, model = released
    depth = {"model.layers.": model.config.text_config.num_hidden_layers,
             "vision_model.encoder.layers.": model.config.vision_config.num_hidden_layers}

    def kept(name: str) -> bool:
        for prefix, n in depth.items():
            if m := re.search(re.escape(prefix) + r"(\d+)\.", name):
                return int(m.group(1)) < n
        return True

    with safe_open(str(src / "model.safetensors"), "pt") as f:
        written = set(f.keys())
    assert written == {n for n in released_names() if kept(n)}
