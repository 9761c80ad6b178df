"""A stage's images: preprocessed once and kept in memory when they fit, else read per step.

Why: the built-in world's ~5,000 images (96 px) preprocess in seconds and take ~0.5 GiB, so the
default keeps them all as one tensor and a step only gathers rows. ALLaVA-3B's mix names ~1.4M
images at 336 px, ~1.3 MiB each in fp32: ~1 TB per stage and rank. Past ``image_cache_mib`` the
stage instead keeps only the images' paths, and a torch ``Dataset`` opens and preprocesses each
image when a step needs it (``num_workers`` DataLoader processes ahead of the training loop), so
memory is bounded by the steps in flight, whatever the dataset's size.

Both modes run the same HF image processor on the same decoded image, one image at a time in
effect (the processor works per image), so the same seed gives the same batches, pixels included
(``tests/train/test_image_streaming.py``). A file that is missing or undecodable when a step reads
it is reported per row; train/data.py counts it for the record's source like any bad record.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# steps each DataLoader worker prepares ahead (torch's default prefetch_factor)
PREFETCH = 2


def load_image(path: Path) -> Image.Image:
    """Decode one image as RGB; raises ValueError with what is wrong (not found / cannot decode)."""
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot decode image {path}: {exc}") from None


def pixel_bytes(image_processor) -> int | None:
    """Bytes of one preprocessed image (3 x H x W fp32), from the processor's output size.

    None when the processor does not say (the stage then streams: safe for any size).
    """
    size = getattr(image_processor, "crop_size", None) if getattr(image_processor, "do_center_crop", False) else None
    size = size or getattr(image_processor, "size", None) or {}
    h = size.get("height", size.get("shortest_edge"))
    w = size.get("width", size.get("shortest_edge"))
    return None if h is None or w is None else 3 * int(h) * int(w) * 4


def fits_cache(n_images: int, per_image: int | None, cap_mib: float) -> bool:
    """Whether ``n_images`` preprocessed images fit the in-memory cap (``image_cache_mib``)."""
    return per_image is not None and n_images * per_image <= cap_mib * 2**20


def resolve_workers(num_workers: int | None, device_type: str) -> int:
    """The config's ``num_workers``; None: 0 on CPU (the cores train), 4 per process on CUDA."""
    if num_workers is not None:
        if num_workers < 0:
            raise ValueError(f"num_workers: expected an integer >= 0, got {num_workers}")
        return num_workers
    return 0 if device_type == "cpu" else 4


def steps_in_flight(num_workers: int) -> int:
    """Step image batches a process holds at most: the one training plus the workers' prefetch."""
    return 1 + num_workers * PREFETCH


class StreamedImages(torch.utils.data.Dataset):
    """Image row -> preprocessed pixels (3, H, W), opened and preprocessed on each access.

    Paths are kept as one numpy byte array, not a list of str: forked DataLoader workers then
    share its pages instead of copying them as Python's reference counts touch each object.
    A bad file is returned as its message (str), not raised, so the training process counts it
    for the record's source instead of a worker's traceback ending the run.
    """

    def __init__(self, paths: Sequence[Path], image_processor) -> None:
        self.paths = np.array([str(p).encode() for p in paths], dtype=bytes)
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, row: int) -> Path:
        return Path(self.paths[row].decode())

    def __getitem__(self, row: int) -> torch.Tensor | str:
        try:
            image = load_image(self.path(row))
        except ValueError as exc:
            return str(exc)
        return self.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]


@dataclass
class ImageBatch:
    """The images one step needs on this process: ``pixels[pos[row]]`` for each good row."""

    pixels: torch.Tensor | None
    pos: dict[int, int] | None  # None: ``pixels`` is the whole stage's cache, indexed by row
    bad: dict[int, str] = field(default_factory=dict)  # row -> what is wrong with its file


def collate_images(items: list[tuple[int, torch.Tensor | str]]) -> ImageBatch:
    """Stack a step's good images; keep the bad rows' messages (runs in the DataLoader worker)."""
    good = [(row, x) for row, x in items if not isinstance(x, str)]
    bad = {row: x for row, x in items if isinstance(x, str)}
    pixels = torch.stack([x for _, x in good]) if good else None
    return ImageBatch(pixels, {row: k for k, (row, _) in enumerate(good)}, bad)


class _WithRow(torch.utils.data.Dataset):
    """(row, pixels-or-message) so the collate knows which row each item is."""

    def __init__(self, images: StreamedImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor | str]:
        return row, self.images[row]


def stream_steps(
    images: StreamedImages, step_rows: Sequence[list[int]], num_workers: int
) -> Iterator[ImageBatch]:
    """One ImageBatch per entry of ``step_rows`` (the distinct image rows of each step), in order.

    The DataLoader's batch sampler is the list of steps, so workers prepare whole steps ahead and
    at most ``steps_in_flight(num_workers)`` of them exist at once. The garbage collector's view
    of the parent's objects is frozen across the fork, so workers do not copy the parent's heap
    by touching every object's header.
    """
    loader = torch.utils.data.DataLoader(
        _WithRow(images), batch_sampler=step_rows, num_workers=num_workers, collate_fn=collate_images,
        prefetch_factor=PREFETCH if num_workers else None,
    )
    if num_workers:
        gc.collect()
        gc.freeze()
    try:
        it = iter(loader)
    finally:
        if num_workers:
            gc.unfreeze()
    yield from it
