"""Model presets -> transformers ``LlavaForConditionalGeneration`` + ``LlavaProcessor``.

A preset is a JSON file in ``allava/presets`` (or any path). It builds the model either from
pretrained hub ids (the real ALLaVA-3B path: CLIP ViT-L/14-336 + Phi-2) or randomly initialised at
full size (``random_init``), which needs no download and serves latency and memory work.
Whatever is built saves as a plain Hugging Face folder: nothing project-specific is needed to
load it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PhiConfig,
    PreTrainedTokenizerBase,
)
from transformers.models.llava import LlavaImageProcessorPil

from allava.chat import CHAT_TEMPLATE
from allava.schema import IMAGE_MARKER

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass
class Preset:
    name: str
    image_size: int
    patch_size: int
    image_mean: list[float]
    image_std: list[float]
    vision: dict[str, Any]
    text: dict[str, Any]
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    projector_hidden_act: str = "gelu"
    pretrained: dict[str, str] | None = None
    tokenizer: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def num_image_tokens(self) -> int:
        """Patch tokens fed to the LM (CLS dropped by the 'default' select strategy)."""
        return (self.image_size // self.patch_size) ** 2


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a preset by name (``tiny``, ``allava-3b``) or from a JSON file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(f"unknown preset {str(name_or_path)!r}; known presets: {', '.join(available_presets())}")
    data = json.loads(path.read_text())
    fields = set(Preset.__dataclass_fields__)
    unknown = set(data) - fields
    if unknown:
        raise ValueError(f"{path}: unknown preset keys {sorted(unknown)}")
    return Preset(**data)


def llava_config(preset: Preset, tokenizer: PreTrainedTokenizerBase) -> LlavaConfig:
    """The LlavaConfig for a preset; vocab rows cover the tokenizer (Phi-2 pads to 51200)."""
    vocab = max(int(preset.text.get("vocab_size", 0)), len(tokenizer))
    eos = tokenizer.eos_token_id
    vision = CLIPVisionConfig(image_size=preset.image_size, patch_size=preset.patch_size, **preset.vision)
    text_kwargs = {k: v for k, v in preset.text.items() if k != "vocab_size"}
    text = PhiConfig(vocab_size=vocab, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, **text_kwargs)
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_MARKER),
        image_seq_length=preset.num_image_tokens,
        projector_hidden_act=preset.projector_hidden_act,
        vision_feature_layer=preset.vision_feature_layer,
        vision_feature_select_strategy=preset.vision_feature_select_strategy,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )


def build_processor(preset: Preset, tokenizer: PreTrainedTokenizerBase) -> LlavaProcessor:
    """LLaVA-1.5 preprocessing: pad to square with the mean colour, resize, normalise."""
    image_processor = LlavaImageProcessorPil(
        do_pad=True,
        size={"shortest_edge": preset.image_size},
        crop_size={"height": preset.image_size, "width": preset.image_size},
        do_center_crop=True,
        image_mean=preset.image_mean,
        image_std=preset.image_std,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=preset.patch_size,
        vision_feature_select_strategy=preset.vision_feature_select_strategy,
        image_token=IMAGE_MARKER,
        num_additional_image_tokens=1,  # CLS, which the 'default' strategy removes again
        chat_template=CHAT_TEMPLATE,
    )


def build_model(
    preset: Preset,
    tokenizer: PreTrainedTokenizerBase,
    random_init: bool = True,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> LlavaForConditionalGeneration:
    """Build the LLaVA-Phi model for a preset.

    ``random_init=False`` loads the pretrained vision tower and language model named by the
    preset (hub ids or local folders) and leaves only the projector random, as LLaVA does.
    """
    config = llava_config(preset, tokenizer)
    torch.manual_seed(seed)
    if random_init or not preset.pretrained:
        if not random_init and not preset.pretrained:
            pass  # presets without pretrained ids (tiny) are always built from scratch
        model = LlavaForConditionalGeneration(config)
        return model.to(dtype)
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    vision = CLIPVisionModel.from_pretrained(preset.pretrained["vision"], dtype=dtype)
    text = AutoModelForCausalLM.from_pretrained(preset.pretrained["text"], dtype=dtype)
    config.vision_config = vision.config
    config.text_config = text.config
    config.text_config.vocab_size = max(text.config.vocab_size, len(tokenizer))
    model = LlavaForConditionalGeneration(config).to(dtype)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    text.resize_token_embeddings(config.text_config.vocab_size)
    model.model.language_model.load_state_dict(text.model.state_dict())
    model.lm_head.weight.data.copy_(text.lm_head.weight.data)
    # Phi-2's lm_head has a bias; transformers' Llava lm_head has none. Fold it into a bias-free
    # head only when it is zero; otherwise warn, since dropping it changes logits.
    if getattr(text.lm_head, "bias", None) is not None and text.lm_head.bias.abs().max() > 0:
        import warnings

        warnings.warn(
            "the text model's lm_head has a non-zero bias that LlavaForConditionalGeneration cannot hold; "
            "it is dropped (ALLaVA's released checkpoints have none)",
            stacklevel=2,
        )
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def freeze_vision_tower(model: LlavaForConditionalGeneration) -> None:
    """ALLaVA's recipe: the vision tower is frozen in both stages; LM and projector train."""
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
