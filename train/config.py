"""Training configuration: plain dataclasses, loaded from YAML, overridable from the command line.

``train/configs/tiny.yaml`` is the built-in default (CPU, minutes); ``train/configs/allava-3b.yaml``
holds the report's recipe (its data mix, global batch 256 PT / 128 FT, lr 2e-5 -> 2e-6 cosine,
weight decay 0, ZeRO-1) and ``allava-3b-longer.yaml`` its two-epoch fine-tuning. Unknown keys are
errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from train.sources import check_format
from train.vision_pretrain import VisionPretrainConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class SourceConfig:
    path: str
    ratio: float = 1.0
    image_root: str | None = None
    # the release's own record format (train/sources.py): allava, sharegpt4v, llava_mix, openchat
    format: str = "allava"
    # stop once more than this share of the file's records is bad (malformed, missing image, too
    # long), after counting them all; None = the run's max_bad_fraction
    max_bad_fraction: float | None = None


@dataclass
class StageConfig:
    name: str
    sources: list[SourceConfig]
    epochs: float = 1.0
    global_batch_size: int = 32
    micro_batch_size: int = 32
    # single process without DeepSpeed: pack each step's length-sorted records into micro-batches of
    # at most this many padded tokens (and at most micro_batch_size rows); None = fixed-size splits
    micro_batch_tokens: int | None = None
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # the HF Trainer default the ALLaVA recipe uses
    max_length: int = 256
    max_steps: int | None = None  # cap (for smoke tests); None = run the epochs
    # sort runs of 8 batches by length (less padding); measured worse on the tiny default (47.7% vs 66.4%)
    group_by_length: bool = False
    # take this stage's trained weights from another run's finished stage (its done.safetensors)
    # instead of training it: ALLaVA-3B-Longer shares ALLaVA-3B's pre-training
    reuse_checkpoint: str | None = None


@dataclass
class EvalConfig:
    file: str | None = None
    max_new_tokens: int = 8
    batch_size: int = 64
    limit: int | None = None


@dataclass
class TrainConfig:
    preset: str = "tiny"
    output_dir: str = "outputs/tiny"
    random_init: bool = False
    world: bool = True  # build the built-in world into data_root first
    world_scenes: int | None = None  # override WorldSpec.train_scenes
    data_root: str = "outputs/world"
    seed: int = 0
    # auto | bf16 | fp16 | fp32 (autocast dtype; master weights stay fp32). auto: bf16 on CUDA and on
    # CPUs with AMX / AVX512-BF16, fp32 on other CPUs (emulated bf16 is ~30x slower there)
    precision: str = "auto"
    threads: int | None = None
    save_every: int = 200
    keep_checkpoints: int = 2
    skip_bad: bool = False
    # None: stop at the first bad record (unless skip_bad). A number: count every bad record per
    # source and stop when a source's bad share passes it (sources may override)
    max_bad_fraction: float | None = None
    deepspeed: str | None = None  # path to a DeepSpeed JSON config (ZeRO-1 in the 3B recipe)
    gradient_checkpointing: bool = False
    # attention kernel for training (stage 0 too): None = transformers' default (sdpa). Not saved
    # with the model. "eager" made a tiny-default step 1.3-1.6x faster (two profiles): at ~40-token
    # sequences on CPU the sdpa flash kernel's backward was a quarter of a step
    attn_implementation: str | None = None
    # run the frozen vision tower once per image and stage instead of every step (train/features.py);
    # single process only (DDP / DeepSpeed runs take pixels). Memory: n_images x tokens x width floats
    cache_vision_features: bool = False
    # a stage's images are preprocessed once and kept in memory while they fit this many MiB
    # (3 x size x size fp32 each; the built-in world's take ~0.5 GiB); past it they are read from
    # their files per step (train/images.py): ALLaVA-3B's ~1.4M images would need ~1 TB
    image_cache_mib: float = 2048.0
    # DataLoader processes that read and preprocess streamed images ahead of the step; None: 0 on
    # CPU (the cores train), 4 per process on CUDA. Unused while a stage's images are cached
    num_workers: int | None = None
    vision_pretrain: VisionPretrainConfig | None = None
    stages: list[StageConfig] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "sources":
            value = [_build(SourceConfig, v, f"{where}.sources[{i}]") for i, v in enumerate(value)]
            for i, src in enumerate(value):
                check_format(src.format, f"{where}.sources[{i}].format")
        elif key == "stages":
            value = [_build(StageConfig, v, f"{where}.stages[{i}]") for i, v in enumerate(value)]
        elif key == "eval":
            value = _build(EvalConfig, value, f"{where}.eval")
        elif key == "vision_pretrain" and value is not None:
            value = _build(VisionPretrainConfig, value, f"{where}.vision_pretrain")
        kwargs[key] = value
    return cls(**kwargs)


def check_loader(cfg: TrainConfig, where: str) -> None:
    """One line naming the key when the image loader's settings cannot work."""
    if isinstance(cfg.image_cache_mib, bool) or not isinstance(cfg.image_cache_mib, (int, float)) \
            or cfg.image_cache_mib < 0:
        raise ValueError(f"{where}: image_cache_mib: expected a number of MiB >= 0, got {cfg.image_cache_mib!r}")
    if cfg.num_workers is not None and (isinstance(cfg.num_workers, bool) or not isinstance(cfg.num_workers, int)
                                        or cfg.num_workers < 0):
        raise ValueError(f"{where}: num_workers: expected an integer >= 0 (or null), got {cfg.num_workers!r}")


def load_config(path: str | Path | None = None, preset: str | None = None) -> TrainConfig:
    """Load a YAML config; without a path, the shipped config named after the preset."""
    if path is None:
        path = CONFIG_DIR / f"{preset or 'tiny'}.yaml"
    path = Path(path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ValueError(f"config {path} not found (shipped configs: {known})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {exc}") from None
    cfg = _build(TrainConfig, data, str(path))
    check_loader(cfg, str(path))
    if preset is not None:
        cfg.preset = preset
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
