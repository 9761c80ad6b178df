"""Training data: ALLaVA-4V files -> token ids, label masks and pixel tensors.

Every record is tokenised once up front (segment by segment, so only assistant replies carry
labels). Images go through the checkpoint's own HF image processor: once up front into an
in-memory tensor when the stage's images fit ``image_cache_mib`` (the built-in default), else per
step from their files (train/images.py: the full ALLaVA-3B mix would need ~1 TB). Problems are
reported with the file and record id; with ``skip_bad`` or ``max_bad_fraction`` they are counted
per source instead, including images that turn out missing or broken when a step reads them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from allava.chat import render_segments
from allava.schema import IMAGE_MARKER, DataError, Record
from train import images as images_mod
from train.sources import SourceRead, SourceReport, read_source

IGNORE_INDEX = -100
DEFAULT_IMAGE_CACHE_MIB = 2048.0  # the built-in world's ~5,000 images take ~0.5 GiB


@dataclass
class Source:
    """One data file of a stage; ``ratio`` scales how many of its records an epoch draws."""

    path: str
    ratio: float = 1.0
    image_root: str | None = None  # defaults to the file's folder
    format: str = "allava"  # the release's record format (train/sources.py)
    max_bad_fraction: float | None = None  # None: the first bad record stops the run (unless skip_bad)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    image: int | None  # the stage's image row (pixel tensor row or streamed path), None for text-only
    source: int = 0  # index of its source in StageData.reports
    rid: str = ""  # the record id, for messages about an image read later


@dataclass
class StageData:
    examples: list[Example]
    pixel_values: torch.Tensor | None  # every image preprocessed (cache mode), else None
    stats: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    reports: list[SourceReport] = field(default_factory=list)  # per source: records read, bad ones by kind
    # the frozen tower's features per image (train/features.py); when set, batches carry these
    # instead of pixels
    image_features: torch.Tensor | None = None
    images: images_mod.StreamedImages | None = None  # streaming mode: rows read per step
    limits: list[float | None] = field(default_factory=list)  # per source: max_bad_fraction
    skip_bad: bool = False
    read_failures: dict[int, str] = field(default_factory=dict)  # example -> its message, counted once

    def count_read_failure(self, example: int, problem: str) -> None:
        """Count an image found missing or broken when a step read it, as the build counts one.

        Counted once per record (as at build time, however often it is drawn), for its source, as
        a missing image. Then, as at build time: no threshold (and no ``skip_bad``) raises this
        record's DataError; a source's ``max_bad_fraction`` raises once its bad share passes it.
        """
        if example in self.read_failures:
            return
        e = self.examples[example]
        report = self.reports[e.source]
        err = DataError(report.path, e.rid, problem)
        self.read_failures[example] = problem
        report.add("missing_image", str(err))
        self.skipped.append(str(err))
        self.stats["skipped"] = self.stats.get("skipped", 0) + 1
        limit = self.limits[e.source] if e.source < len(self.limits) else None
        if self.skip_bad:
            return
        if limit is None:
            raise err
        report.check(limit)


def encode_record(
    record: Record, tokenizer: PreTrainedTokenizerBase, image_token_id: int, num_image_tokens: int, max_length: int
) -> tuple[list[int], list[int], bool]:
    """Token ids and labels (-100 outside assistant replies); the flag says it was truncated."""
    ids: list[int] = []
    labels: list[int] = []
    for seg in render_segments(record.conversations):
        seg_ids = tokenizer(seg.text, add_special_tokens=False)["input_ids"]
        expanded: list[int] = []
        for t in seg_ids:
            expanded.extend([t] * num_image_tokens if t == image_token_id else [t])
        ids.extend(expanded)
        labels.extend(expanded if seg.trainable else [IGNORE_INDEX] * len(expanded))
    truncated = len(ids) > max_length
    if truncated:
        if record.image is not None and ids.index(image_token_id) + num_image_tokens > max_length:
            raise DataError("<tokenized>", record.id, f"max_length {max_length} cuts through the image tokens")
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels, truncated


def load_image(path: Path, source: str, rid: str) -> Image.Image:
    """Decode one image; a DataError naming the file and record when it is missing or broken."""
    try:
        return images_mod.load_image(path)
    except ValueError as exc:
        raise DataError(source, rid, str(exc)) from None


def check_image(path: Path, source: str, rid: str) -> None:
    """Streaming mode's build-time check: the file exists (stat only; decoding waits for the step)."""
    if not path.is_file():
        raise DataError(source, rid, f"image file not found: {path}")


@dataclass
class _Drawn:
    """One source read and its draw order, before anything is tokenised or loaded."""

    src: Source
    read: SourceRead
    order: list[int]
    root: Path


def _draw(sources: Sequence[Source], rng: random.Random, collect_all: bool) -> list[_Drawn]:
    drawn = []
    for src in sources:
        path = Path(src.path)
        read = read_source(path, src.format, collect=collect_all or src.max_bad_fraction is not None)
        n = len(read.records)
        n_draw = round(n * src.ratio)
        order = [i % n for i in range(n_draw)] if n else []
        if src.ratio < 1:
            order = sorted(rng.sample(range(n), n_draw))
        drawn.append(_Drawn(src, read, order, Path(src.image_root) if src.image_root else path.parent))
    return drawn


def _distinct_images(drawn: Sequence[_Drawn]) -> int:
    """Distinct image paths the drawn records name (unresolved: an upper bound, no syscalls)."""
    return len({d.root / d.read.records[i].image for d in drawn for i in set(d.order)
                if d.read.records[i].image is not None})


def build_stage_data(
    sources: Sequence[Source],
    tokenizer: PreTrainedTokenizerBase,
    image_processor,
    image_token_id: int,
    num_image_tokens: int,
    max_length: int,
    seed: int,
    skip_bad: bool = False,
    progress: bool = True,
    image_cache_mib: float = DEFAULT_IMAGE_CACHE_MIB,
) -> StageData:
    """Load, validate and tokenise every source of a stage, applying sampling ratios.

    Bad records stop the run at the first one by default; with ``skip_bad`` they are skipped; with a
    source's ``max_bad_fraction`` they are all counted first and the run stops only past that share.
    When the stage's distinct images fit ``image_cache_mib`` preprocessed, they are decoded and
    preprocessed here, once (``pixel_values``); past it only their paths are kept (``images``,
    train/images.py) and a missing file is found here by a stat, an undecodable one when a step
    reads it (:meth:`StageData.count_read_failure`).
    """
    rng = random.Random(seed)
    drawn = _draw(sources, rng, skip_bad)
    cache = images_mod.fits_cache(_distinct_images(drawn), images_mod.pixel_bytes(image_processor), image_cache_mib)
    examples: list[Example] = []
    image_index: dict[Path, int] = {}
    images: list[Image.Image] = []
    paths: list[Path] = []
    skipped: list[str] = []
    reports: list[SourceReport] = []
    truncated = 0
    for k, d in enumerate(drawn):
        src, path, records, report = d.src, Path(d.src.path), d.read.records, d.read.report
        collect = skip_bad or src.max_bad_fraction is not None
        skipped += d.read.malformed
        failed: set[int] = set()  # records counted bad once, however often a ratio > 1 draws them
        for i in tqdm(d.order, desc=f"data: {path.name}", disable=not progress, unit="rec", leave=False):
            rec = records[i]
            if i in failed:
                continue
            kind = "missing_image"
            try:
                img_idx = None
                if rec.image is not None:
                    img_path = (d.root / rec.image).resolve()
                    if img_path not in image_index:
                        if cache:
                            images.append(load_image(img_path, str(path), rec.id))
                        else:
                            check_image(img_path, str(path), rec.id)
                        paths.append(img_path)
                        image_index[img_path] = len(paths) - 1
                    img_idx = image_index[img_path]
                kind = "too_long"
                ids, labels, cut = encode_record(rec, tokenizer, image_token_id, num_image_tokens, max_length)
                if all(label == IGNORE_INDEX for label in labels):
                    raise DataError(path, rec.id, f"no assistant tokens left within max_length {max_length}")
            except DataError as exc:
                if exc.source == "<tokenized>":
                    exc = DataError(path, rec.id, str(exc).split(": ", 1)[1])
                if not collect:
                    raise exc from None
                failed.add(i)
                report.add(kind, str(exc))
                skipped.append(str(exc))
                continue
            truncated += int(cut)
            examples.append(Example(ids, labels, img_idx, k, rec.id))
        if not skip_bad:
            report.check(src.max_bad_fraction)
        reports.append(report)
    pixel_values = preprocess_images(images, image_processor, progress) if images else None
    streamed = None if cache or not paths else images_mod.StreamedImages(paths, image_processor)
    stats = {"examples": len(examples), "images": len(paths), "truncated": truncated, "skipped": len(skipped)}
    return StageData(examples, pixel_values, stats, skipped, reports, images=streamed,
                     limits=[s.max_bad_fraction for s in sources], skip_bad=skip_bad)


def preprocess_images(images: list[Image.Image], image_processor, progress: bool = True, batch: int = 256) -> torch.Tensor:
    """Run the checkpoint's HF image processor once per unique image (pad, resize, normalise)."""
    chunks = []
    for start in tqdm(range(0, len(images), batch), desc="data: preprocessing images", disable=not progress, leave=False):
        out = image_processor(images=images[start : start + batch], return_tensors="pt")
        chunks.append(out["pixel_values"])
    return torch.cat(chunks)


def collate(
    examples: Sequence[Example], pixel_values: torch.Tensor | None, pad_id: int, image_key: str = "pixel_values",
    pos: dict[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad a micro batch; text-only examples simply contribute no image rows.

    ``pixel_values`` holds one row per image: pixels, or cached features with ``image_key``
    ``"image_features"``. With ``pos`` it holds only a step's streamed images, image row ``r``
    at ``pos[r]``.
    """
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    image_rows = [e.image for e in examples if e.image is not None]
    if pos is not None:
        image_rows = [pos[r] for r in image_rows]
    if image_rows:
        assert pixel_values is not None
        batch[image_key] = pixel_values[image_rows]
    return batch


def epoch_order(
    n_examples: int, epochs: float, seed: int, lengths: Sequence[int] | None = None, batch_size: int = 1,
    group: int = 8,
) -> list[int]:
    """The full, deterministic sample order of a stage: a fresh permutation per epoch.

    With ``lengths``, every run of ``group`` batches is sorted by length and cut into batches whose
    order is then shuffled (transformers' ``group_by_length``): less padding, same randomness.
    """
    order = _permutations(n_examples, epochs, seed)
    if lengths is None or batch_size <= 1:
        return order
    rng = random.Random(seed + 1)
    chunk = batch_size * group
    grouped: list[int] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches = [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
        full = [b for b in batches if len(b) == batch_size]
        rng.shuffle(full)
        grouped += [i for b in full for i in b] + [i for b in batches if len(b) < batch_size for i in b]
    return grouped


def _permutations(n_examples: int, epochs: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    order: list[int] = []
    full, frac = int(epochs), epochs - int(epochs)
    for _ in range(full):
        perm = list(range(n_examples))
        rng.shuffle(perm)
        order += perm
    if frac > 0:
        perm = list(range(n_examples))
        rng.shuffle(perm)
        order += perm[: round(frac * n_examples)]
    return order


__all__ = ["IMAGE_MARKER", "Source", "StageData", "build_stage_data", "collate", "encode_record", "epoch_order"]
