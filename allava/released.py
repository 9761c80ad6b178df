"""Import released ALLaVA checkpoints (LLaVA code-base layout) into transformers' Llava layout.

The released ALLaVA-Phi2 weights were saved by LLaVA's training code: ``LlavaPhiForCausalLM``
(``model_type`` llava_phi), Phi config fields at the top level plus ``mm_*`` fields, and keys like
``model.mm_projector.0``, ``model.vision_tower.vision_tower.vision_model.*`` and ``model.layers.*``.
After import the folder loads with plain ``LlavaForConditionalGeneration.from_pretrained`` and
every later stage (export, quantize, bench) treats it like a checkpoint we trained.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, PhiConfig

from allava.modeling import Preset, build_processor
from allava.tokenizer import load_pretrained_tokenizer

PHI_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "layer_norm_eps", "partial_rotary_factor",
    "rope_theta", "hidden_act", "qk_layernorm",
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class ImportError_(ValueError):
    """The source folder is not a released LLaVA-Phi checkpoint we can convert."""


def _read_state_dict(src: Path) -> dict[str, torch.Tensor]:
    shards = sorted(src.glob("*.safetensors"))
    if shards:
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(shard)))
        return state
    bins = sorted(src.glob("pytorch_model*.bin"))
    if not bins:
        raise ImportError_(f"{src}: no *.safetensors or pytorch_model*.bin weights found")
    state = {}
    for b in bins:
        state.update(torch.load(b, map_location="cpu", weights_only=True))
    return state


def map_key(key: str) -> str | None:
    """Released key -> LlavaForConditionalGeneration parameter name (None: drop)."""
    rules = [
        (r"^model\.vision_tower\.vision_tower\.vision_model\.(.*)$", r"model.vision_tower.\1"),
        (r"^model\.mm_projector\.0\.(.*)$", r"model.multi_modal_projector.linear_1.\1"),
        (r"^model\.mm_projector\.2\.(.*)$", r"model.multi_modal_projector.linear_2.\1"),
        (r"^model\.(embed_tokens|layers|final_layernorm)(.*)$", r"model.language_model.\1\2"),
        (r"^lm_head\.weight$", "lm_head.weight"),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    if key.endswith("position_ids"):
        return None
    return ""


def _vision_config(state: dict[str, torch.Tensor], heads: int | None) -> CLIPVisionConfig:
    prefix = "model.vision_tower.vision_tower.vision_model."
    patch = state[prefix + "embeddings.patch_embedding.weight"]
    hidden, _, p, _ = patch.shape
    n_pos = state[prefix + "embeddings.position_embedding.weight"].shape[0]
    side = round((n_pos - 1) ** 0.5)
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k)))
    inter = state[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    return CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads or max(1, hidden // 64), image_size=side * p, patch_size=p,
    )


def import_released(src: str | Path, dst: str | Path, vision_heads: int | None = None) -> Path:
    """Convert ``src`` (released layout) into a transformers Llava folder at ``dst``."""
    src, dst = Path(src), Path(dst)
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise ImportError_(f"{src}: config.json not found")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") not in ("llava_phi", "llava_phi2", "llava"):
        raise ImportError_(f"{cfg_path}: model_type {cfg.get('model_type')!r} is not a released LLaVA-Phi checkpoint")
    if cfg.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ImportError_(f"{cfg_path}: mm_projector_type {cfg['mm_projector_type']!r}; only mlp2x_gelu is supported")
    state = _read_state_dict(src)
    if "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight" not in state:
        raise ImportError_(
            f"{src}: the checkpoint holds no vision tower weights; download {cfg.get('mm_vision_tower')} and "
            "merge it first (LLaVA saves the tower only when it was unfrozen)"
        )
    if "lm_head.bias" in state and state["lm_head.bias"].abs().max() > 0:
        raise ImportError_(f"{src}: lm_head has a non-zero bias, which LlavaForConditionalGeneration cannot hold")
    tokenizer = load_pretrained_tokenizer(str(src))
    text_kwargs = {k: cfg[k] for k in PHI_FIELDS if k in cfg}
    text_kwargs["vocab_size"] = max(int(cfg.get("vocab_size", 0)), len(tokenizer))
    eos = tokenizer.eos_token_id
    text = PhiConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, **text_kwargs)
    vision = _vision_config(state, vision_heads)
    select = cfg.get("mm_vision_select_feature", "patch")
    llava_cfg = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        projector_hidden_act="gelu",
        vision_feature_layer=int(cfg.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy="default" if select == "patch" else "full",
        multimodal_projector_bias=True, tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(llava_cfg)
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for k, v in state.items():
        if k == "lm_head.bias":
            continue
        new = map_key(k)
        if new is None:
            continue
        if new == "":
            unknown.append(k)
            continue
        mapped[new] = v
    if unknown:
        raise ImportError_(f"{src}: unexpected keys for a LLaVA-Phi checkpoint, e.g. {unknown[:3]}")
    emb_key = "model.language_model.embed_tokens.weight"
    rows = llava_cfg.text_config.vocab_size
    for key in (emb_key, "lm_head.weight"):
        if mapped[key].shape[0] < rows:  # <image> was added beyond the released rows
            pad = torch.zeros(rows - mapped[key].shape[0], mapped[key].shape[1], dtype=mapped[key].dtype)
            mapped[key] = torch.cat([mapped[key], pad])
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise ImportError_(f"{src}: after mapping, missing {missing[:3]} / unexpected {unexpected[:3]}")
    preset = Preset(
        name="imported", image_size=vision.image_size, patch_size=vision.patch_size,
        image_mean=CLIP_MEAN, image_std=CLIP_STD, vision={}, text={},
        vision_feature_layer=llava_cfg.vision_feature_layer,
        vision_feature_select_strategy=llava_cfg.vision_feature_select_strategy,
    )
    processor = build_processor(preset, tokenizer)
    if cfg.get("image_aspect_ratio", "pad") != "pad":
        processor.image_processor.do_pad = False
    tmp = dst.parent / f".tmp-{dst.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst
