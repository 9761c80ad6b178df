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


# -- the one image-feature path -------------------------------------------------------------------
# Training, the PyTorch runtime and the exporters all go through transformers' own
# ``get_image_features`` (feature layer, CLS drop and projector as the config says) and hand the
# result back to the model's forward (``mm_encoder_outputs``), which splices it into the image-token
# positions itself. Nothing here re-implements either step.


def image_features(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected image features [n_images, n_image_tokens, lm_hidden], exactly as the forward computes them."""
    feats = model.get_image_features(pixel_values=pixel_values).pooler_output
    return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats


def projector_inputs(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """What ``get_image_features`` feeds the projector: the frozen tower's selected features.

    Training caches these once per stage (the tower is frozen; the projector is not). They are
    taken from inside ``get_image_features`` with a forward pre-hook on the projector, so the
    layer choice and CLS drop stay transformers' own."""
    captured: list[torch.Tensor] = []
    hook = model.model.multi_modal_projector.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        model.get_image_features(pixel_values=pixel_values)
    finally:
        hook.remove()
    return captured[0]


def image_encoder_outputs(features: torch.Tensor) -> dict[str, Any]:
    """Projected features in the form ``LlavaForConditionalGeneration.forward(mm_encoder_outputs=...)`` takes."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return {"image": BaseModelOutputWithPooling(pooler_output=list(features))}  # one tensor per image


# -- random-weight checkpoints --------------------------------------------------------------------

RANDOM_TOKENIZER_CORPUS = [
    "USER: What colour is the circle?\nASSISTANT: The circle is red.",
    "a small blue square is left of a large green triangle on a grey background",
    "How many shapes are there? Answer the question using a single word or phrase.",
    "the yellow circle is above the purple square and below the orange triangle",
    "Describe the image. There are three shapes: a white circle, a black square and a red triangle.",
]


def save_random_checkpoint(out: str | Path, preset: str = "tiny", seed: int = 0, vocab_size: int = 1024,
                           dtype: torch.dtype = torch.float32) -> Path:
    """A seeded random-weight HF folder of a preset (model, processor, tokenizer), written atomically.

    Why: export, quantize, parity and latency are about moving weights faithfully and fast, not about
    what the weights say, so a random model of the right shape exercises them with no download. A
    full-size preset is initialised directly in ``dtype`` (bf16: 6 GB instead of 12 GB for ALLaVA-3B)."""
    import shutil

    from allava.tokenizer import train_bpe_tokenizer

    out = Path(out)
    tok = train_bpe_tokenizer(RANDOM_TOKENIZER_CORPUS * 40, vocab_size)
    p = load_preset(preset)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = build_model(p, tok, random_init=True, seed=seed, dtype=dtype)
    finally:
        torch.set_default_dtype(old)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="2GB")
    build_processor(p, tok).save_pretrained(tmp)
    del model
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
