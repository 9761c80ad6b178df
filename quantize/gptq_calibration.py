"""Calibration samples for GPTQ from ALLaVA-4V data: the model's own chat format, with the images.

Why with images: in a LLaVA prompt most positions are image tokens (576 of ~650 for ALLaVA-3B), so
a language model calibrated on text alone sees an input distribution unlike the one it runs on.
Multimodal samples go through the processor exactly as at inference (pad to square, resize,
normalise, image marker expanded to the image tokens). Text-only calibration (``text_only``) keeps
the same conversations and drops the image and its marker: the comparison isolates the images.

The choice of records is seeded (same data + seed + n = same samples), so a restarted run
calibrates identically.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allava.chat import render_segments
from allava.schema import IMAGE_MARKER, DataError, Record, load_records

DEFAULT_WORLD = Path("outputs/world")  # where python train/run.py builds the built-in world
CALIBRATION_SCENES = 512  # a world of this many scenes is built when DEFAULT_WORLD is absent


class CalibrationError(ValueError):
    """Calibration data that cannot be used; the message names the file and what was expected."""


@dataclass(frozen=True)
class CalibrationSpec:
    data: Path  # an ALLaVA-4V JSON file
    image_root: Path  # folder the records' "image" paths are relative to
    n_samples: int
    seed: int = 0
    text_only: bool = False
    max_tokens: int = 2048  # longer conversations are cut (GPTQ needs the statistics, not the ends)

    def describe(self) -> dict[str, Any]:
        return {"data": str(self.data.resolve()), "image_root": str(self.image_root.resolve()), "n_samples": self.n_samples,
                "seed": self.seed, "kind": "text" if self.text_only else "multimodal",
                "max_tokens": self.max_tokens}


def default_data() -> Path:
    """The built-in world's caption-then-QA conversations (ALLaVA-Instruct-World.json): from
    outputs/world when training built it, else from a world of the same generator (same seed, so its
    scenes are the first ones of outputs/world) built once into the user cache: no download, and
    the default works on a fresh clone."""
    from allava.fileio import cache_dir
    from allava.world.build import INSTRUCT_FILE, WorldSpec, build_world

    if (DEFAULT_WORLD / INSTRUCT_FILE).is_file():
        return DEFAULT_WORLD / INSTRUCT_FILE
    root = cache_dir() / f"calibration-world-{CALIBRATION_SCENES}"
    build_world(root, WorldSpec(train_scenes=CALIBRATION_SCENES, heldout_scenes=0, text_records=0), progress=False)
    return root / INSTRUCT_FILE


def choose_records(spec: CalibrationSpec) -> list[Record]:
    """``n_samples`` records, seeded; multimodal calibration takes only records with an image."""
    if spec.n_samples < 1:
        raise CalibrationError(f"--n-samples must be at least 1, got {spec.n_samples}")
    try:
        records, _ = load_records(spec.data)
    except (DataError, OSError, ValueError) as exc:
        raise CalibrationError(f"{spec.data}: not ALLaVA-4V calibration data ({exc})") from exc
    pool = records if spec.text_only else [r for r in records if r.has_image]
    if not pool:
        raise CalibrationError(f"{spec.data}: no records{'' if spec.text_only else ' with an image'} to calibrate on")
    random.Random(spec.seed).shuffle(pool := list(pool))
    chosen = pool[: spec.n_samples]
    if not spec.text_only:
        for r in chosen:
            img = spec.image_root / str(r.image)
            if not img.is_file():
                raise CalibrationError(f"{spec.data}, record {r.id!r}: image {img} not found "
                                       f"(image paths are relative to --images {spec.image_root})")
    return chosen


def conversation_text(record: Record, with_image: bool) -> str:
    """The record as the chat template renders it (prompt and answers: the calibration sees both)."""
    text = "".join(s.text for s in render_segments(record.conversations))
    if not with_image:
        text = text.replace(f"{IMAGE_MARKER}\n", "").replace(IMAGE_MARKER, "")
    return text


def build_samples(spec: CalibrationSpec, processor: Any) -> list[dict[str, Any]]:
    """Processor outputs (input_ids, attention_mask[, pixel_values]), one sample per record."""
    from PIL import Image

    samples = []
    for r in choose_records(spec):
        text = conversation_text(r, with_image=not spec.text_only)
        if spec.text_only:
            enc = processor.tokenizer(text, return_tensors="pt", truncation=True, max_length=spec.max_tokens)
        else:
            with Image.open(spec.image_root / str(r.image)) as im:
                enc = processor(images=[im.convert("RGB")], text=[text], return_tensors="pt")
            # the image tokens come first and number far fewer than max_tokens: a cut keeps them whole
            if enc["input_ids"].shape[1] > spec.max_tokens:
                enc["input_ids"] = enc["input_ids"][:, : spec.max_tokens]
                enc["attention_mask"] = enc["attention_mask"][:, : spec.max_tokens]
        samples.append(dict(enc))
    return samples


def add_calibration_args(ap: argparse.ArgumentParser, data_help: str, samples_help: str) -> None:
    """The calibration options GPTQ and the GGUF importance matrix share (same sampling, same flags)."""
    ap.add_argument("--calibration", type=Path, help=data_help)
    ap.add_argument("--images", type=Path, help="folder the records' image paths are relative to (default: the JSON's folder)")
    ap.add_argument("--n-samples", type=int, default=128, help=f"{samples_help} (default 128)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the calibration sample choice (default 0)")
    ap.add_argument("--text-only", action="store_true", help="calibrate on the conversations' text without the images")


def spec_from_args(a: argparse.Namespace) -> CalibrationSpec:
    """The CalibrationSpec the options of add_calibration_args ask for."""
    data = a.calibration or default_data()
    return CalibrationSpec(data, a.images or data.parent, a.n_samples, a.seed, a.text_only)
