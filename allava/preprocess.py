"""LLaVA-1.5 inputs without torch: the image tensor and the prompt's token ids, as the HF processor makes them.

Why not the HF processor itself: runtimes for edge formats (ONNX Runtime here) must not pull in
torch and transformers (~330 MiB of resident memory before any weight is loaded, measured), or
every memory figure of those formats would carry it. This reads the same files the processor
reads (processor_config.json or preprocessor_config.json, tokenizer.json) and follows the same
steps: pad to square with the mean colour, resize the shortest edge (bicubic), centre crop,
rescale, normalise; the `<image>` marker becomes one image token per projected patch.
tests/core/test_preprocess.py checks both against `AutoProcessor` on images of several sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from allava.schema import IMAGE_MARKER


def _processor_configs(folder: Path) -> tuple[dict, dict]:
    """(image processor settings, processor settings) from the files transformers writes."""
    proc = folder / "processor_config.json"
    pre = folder / "preprocessor_config.json"
    processor = json.loads(proc.read_text(encoding="utf-8")) if proc.is_file() else {}
    image = processor.get("image_processor") or (json.loads(pre.read_text(encoding="utf-8")) if pre.is_file() else None)
    if not image:
        raise FileNotFoundError(f"{folder}: no image processor settings (processor_config.json or preprocessor_config.json)")
    return image, processor


@dataclass(frozen=True)
class ImagePreprocessor:
    size: int  # shortest edge after resizing
    crop: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255
    pad: bool = True
    resample: int = Image.Resampling.BICUBIC

    @classmethod
    def from_folder(cls, folder: str | Path) -> ImagePreprocessor:
        cfg, _ = _processor_configs(Path(folder))
        size = cfg.get("size", {})
        crop = cfg.get("crop_size") or {"height": size.get("shortest_edge"), "width": size.get("shortest_edge")}
        return cls(size=int(size.get("shortest_edge") or size.get("height")), crop=(int(crop["height"]), int(crop["width"])),
                   mean=tuple(cfg["image_mean"]), std=tuple(cfg["image_std"]), rescale=float(cfg.get("rescale_factor", 1 / 255)),
                   pad=bool(cfg.get("do_pad", True)), resample=int(cfg.get("resample", Image.Resampling.BICUBIC)))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """pixel_values [1, 3, crop_h, crop_w] float32."""
        img = image.convert("RGB")
        if self.pad and img.width != img.height:
            side = max(img.width, img.height)
            square = Image.new("RGB", (side, side), tuple(int(m * 255) for m in self.mean))
            square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
            img = square
        short, long = sorted((img.width, img.height))
        new_long = int(self.size * long / short)
        new_size = (self.size, new_long) if img.width <= img.height else (new_long, self.size)
        if new_size != img.size:
            img = img.resize(new_size, resample=self.resample)
        ch, cw = self.crop
        top, left = (img.height - ch) // 2, (img.width - cw) // 2
        if (ch, cw) != (img.height, img.width):
            img = img.crop((left, top, left + cw, top + ch))
        x = np.asarray(img, dtype=np.float32) * np.float32(self.rescale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


@dataclass
class PromptTokenizer:
    """Token ids of a chat prompt with the image marker expanded to ``n_image_tokens`` image tokens."""

    tokenizer: object  # tokenizers.Tokenizer
    image_token_id: int
    n_image_tokens: int
    eos_token_id: int | None

    @classmethod
    def from_folder(cls, folder: str | Path) -> PromptTokenizer:
        from tokenizers import Tokenizer

        folder = Path(folder)
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        image_cfg, proc = _processor_configs(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        patch = int(proc.get("patch_size") or config["vision_config"]["patch_size"])
        crop = image_cfg.get("crop_size") or {}
        side = int(crop.get("height") or image_cfg["size"]["shortest_edge"])
        n = (side // patch) ** 2 + int(proc.get("num_additional_image_tokens", 0))
        if proc.get("vision_feature_select_strategy", config.get("vision_feature_select_strategy")) == "default":
            n -= 1
        marker = proc.get("image_token", IMAGE_MARKER)
        image_id = tok.token_to_id(marker)
        if image_id is None:
            raise ValueError(f"{folder}/tokenizer.json has no {marker!r} token")
        eos = config.get("text_config", {}).get("eos_token_id")
        gen = folder / "generation_config.json"
        if gen.is_file():
            eos = json.loads(gen.read_text(encoding="utf-8")).get("eos_token_id", eos)
        return cls(tok, image_id, n, eos[0] if isinstance(eos, list) else eos)

    def encode(self, prompt: str, with_image: bool = True) -> list[int]:
        """The ids the HF processor gives for ``prompt`` (text only: the marker is dropped)."""
        if not with_image:
            return self.tokenizer.encode(prompt.replace(IMAGE_MARKER, ""), add_special_tokens=True).ids
        ids = self.tokenizer.encode(prompt, add_special_tokens=True).ids
        out: list[int] = []
        for i in ids:
            out.extend([i] * self.n_image_tokens if i == self.image_token_id else [i])
        return out

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i != self.eos_token_id], skip_special_tokens=True)
