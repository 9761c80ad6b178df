"""The dry run: what a config would train on, per source and stage, without a GPU or a model.

``python train/run.py --config train/configs/allava-3b.yaml --dry-run`` reads every source file in
its official format, checks that every image it names exists (stat only, no decoding: the real
recipe names ~1.4M images), counts malformed records and missing images per source, and prints the
samples, optimizer steps and an estimate of the tokens per stage. It stops like training would: a
missing file, or a source whose bad share passes ``max_bad_fraction``, is one line naming the file
(exit 2) after the counts are printed.

``--declared-sizes`` plans from the record counts the releases publish (``train/data_catalog.py``)
instead, for checking a config's proportions before anything is downloaded.

Tokens are an estimate, not a tokenizer run (the Phi-2 tokenizer would need a download): text
characters / 4 (GPT-2-style BPE on English prose) plus the preset's image tokens, capped at the
stage's max_length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from allava.schema import DataError, Record
from train.config import StageConfig, TrainConfig
from train.data_catalog import annotation
from train.images import fits_cache, resolve_workers, steps_in_flight
from train.sources import SourceReport, read_source

CHARS_PER_TOKEN = 4


@dataclass
class SourcePlan:
    path: str
    format: str
    ratio: float
    records: int  # usable records (parsed, image present)
    with_image: int
    samples: int  # drawn per epoch
    tokens: int | None  # per epoch, estimated; None when planned from declared sizes
    report: SourceReport | None = None  # None when planned from declared sizes
    declared: bool = False
    max_bad_fraction: float | None = None
    image_paths: frozenset[Path] = frozenset()  # the images its usable records name (from the files)


@dataclass
class StagePlan:
    stage: StageConfig
    sources: list[SourcePlan] = field(default_factory=list)

    @property
    def unique_images(self) -> int:
        return len(frozenset().union(*(s.image_paths for s in self.sources)))

    @property
    def per_epoch(self) -> int:
        return sum(s.samples for s in self.sources)

    @property
    def samples(self) -> int:
        """As train/data.py's epoch order: whole epochs, then a rounded fraction of one."""
        full, frac = int(self.stage.epochs), self.stage.epochs - int(self.stage.epochs)
        return full * self.per_epoch + round(frac * self.per_epoch)

    @property
    def steps(self) -> int:
        if self.stage.reuse_checkpoint:
            return 0
        steps = self.samples // self.stage.global_batch_size
        return min(steps, self.stage.max_steps) if self.stage.max_steps is not None else steps

    @property
    def tokens(self) -> int | None:
        if any(s.tokens is None for s in self.sources) or not self.per_epoch:
            return None
        return round(sum(s.tokens or 0 for s in self.sources) * self.samples / self.per_epoch)


def _estimate_tokens(rec: Record, image_tokens: int, max_length: int) -> int:
    chars = sum(len(t.value) for t in rec.conversations)
    return min(max_length, chars // CHARS_PER_TOKEN + (image_tokens if rec.image is not None else 0))


def _plan_source_from_file(
    path: Path, fmt: str, ratio: float, image_root: Path, image_tokens: int, max_length: int
) -> SourcePlan:
    read = read_source(path, fmt, collect=True)
    report = read.report
    usable: list[Record] = []
    seen: dict[Path, bool] = {}
    for rec in read.records:
        if rec.image is not None:
            img = image_root / rec.image
            if img not in seen:
                seen[img] = img.is_file()
            if not seen[img]:
                report.add("missing_image", str(DataError(path, rec.id, f"image file not found: {img}")))
                continue
        usable.append(rec)
    tokens = sum(_estimate_tokens(r, image_tokens, max_length) for r in usable)
    return SourcePlan(
        str(path), fmt, ratio, len(usable), sum(r.image is not None for r in usable),
        round(len(usable) * ratio), round(tokens * ratio), report,
        image_paths=frozenset(image_root / r.image for r in usable if r.image is not None),
    )


def _plan_source_declared(rel: str, fmt: str, ratio: float, config: str) -> SourcePlan:
    entry = annotation(rel)
    if entry is None:
        raise DataError(config, None, f"source {rel!r} has no declared size in train/data_catalog.py; "
                        "plan it from the file (without --declared-sizes)")
    with_image = entry.records - entry.text_only if entry.image_dirs else 0
    return SourcePlan(rel, fmt, ratio, entry.records, with_image, round(entry.records * ratio), None, declared=True)


def plan_stages(cfg: TrainConfig, declared: bool = False, config: str = "config") -> list[StagePlan]:
    """Plan every stage of ``cfg``. Raises DataError (one line) when source files are missing."""
    root = Path(cfg.data_root)
    if not declared:
        missing = sorted({s.path for st in cfg.stages for s in st.sources if not (root / s.path).is_file()})
        if missing and cfg.world:
            raise DataError(root, None, f"{len(missing)} data file(s) missing: the built-in world is written by "
                            "the first training run (python train/run.py), not by the dry run")
        if missing:
            raise DataError(root, None, f"{len(missing)} data file(s) missing: {', '.join(missing)} "
                            "(python train/prepare_data.py --list says where each comes from; "
                            "--declared-sizes plans without them)")
    image_tokens = _preset(cfg.preset).num_image_tokens
    plans: list[StagePlan] = []
    cache: dict[tuple[str, str, str, int], SourcePlan] = {}
    for stage in cfg.stages:
        sp = StagePlan(stage)
        for s in stage.sources:
            if declared:
                sp.sources.append(_plan_source_declared(s.path, s.format, s.ratio, config))
                continue
            img_root = root / s.image_root if s.image_root else (root / s.path).parent
            key = (s.path, s.format, str(img_root), stage.max_length)
            if key not in cache:  # the text file appears in both stages: read it once
                cache[key] = _plan_source_from_file(root / s.path, s.format, 1.0, img_root, image_tokens,
                                                    stage.max_length)
            base = cache[key]
            limit = s.max_bad_fraction if s.max_bad_fraction is not None else cfg.max_bad_fraction
            sp.sources.append(SourcePlan(base.path, s.format, s.ratio, base.records, base.with_image,
                                         round(base.records * s.ratio), round((base.tokens or 0) * s.ratio),
                                         base.report, max_bad_fraction=limit, image_paths=base.image_paths))
        plans.append(sp)
    return plans


def _preset(name: str):
    from allava.modeling import load_preset

    return load_preset(name)


def _human(n: float, base: int = 1000) -> str:
    """A count with k/M/G/T (base 1000: 1234567 -> '1.2M'), or a size with Ki/Mi/Gi/Ti (base 1024)."""
    units = ["", "k", "M", "G", "T"] if base == 1000 else ["", "Ki", "Mi", "Gi", "Ti"]
    for unit in units:
        if abs(n) < base or unit == units[-1]:
            return f"{n:,.1f}{unit}" if unit else f"{n:,.0f}"
        n /= base
    return f"{n:,.1f}"


def format_plan(cfg: TrainConfig, plans: list[StagePlan], config: str, declared: bool) -> str:
    """The printed plan: a table per stage, then the run's totals."""
    root = Path(cfg.data_root)
    how = "declared sizes (train/data_catalog.py)" if declared else "the files"
    lines = [f"plan: {config} (preset {cfg.preset}), data root {root}, record counts from {how}"]
    if not declared:
        lines.append(f"tokens: estimated as text characters / {CHARS_PER_TOKEN} + "
                     f"{_preset(cfg.preset).num_image_tokens} per image, capped at the stage's max length")
    for sp in plans:
        st = sp.stage
        lines.append("")
        head = (f"stage {st.name}: {st.epochs:g} epoch(s), global batch {st.global_batch_size}, max length "
                f"{st.max_length}, lr {st.lr:g} -> {st.min_lr:g}, warm-up {st.warmup_ratio:.0%}")
        lines.append(head)
        if st.reuse_checkpoint:
            there = "present" if Path(st.reuse_checkpoint).is_file() else "not there yet: run the shared config first"
            lines.append(f"  reused: weights from {st.reuse_checkpoint} ({there}); not trained in this run")
        lines.append(f"  {'source':<58} {'format':<10} {'records':>9} {'w/ image':>9} {'bad':>6} {'ratio':>5} "
                     f"{'samples':>9} {'share':>6}")
        for s in sp.sources:
            name = s.path[len(str(root)) + 1:] if s.path.startswith(str(root) + "/") else s.path
            bad = "-" if s.report is None else str(s.report.bad)
            share = s.samples / sp.per_epoch if sp.per_epoch else 0.0
            lines.append(f"  {name:<58} {s.format:<10} {s.records:>9,} {s.with_image:>9,} {bad:>6} {s.ratio:>5g} "
                         f"{s.samples:>9,} {share:>6.1%}")
        tokens = "n/a (needs the files)" if sp.tokens is None else f"~{_human(sp.tokens)}"
        lines.append(f"  per epoch {sp.per_epoch:,} samples; {st.epochs:g} epoch(s) -> {sp.samples:,} samples, "
                     f"{sp.steps:,} steps of {st.global_batch_size}, tokens {tokens}")
        if sp.unique_images:
            lines.append(_image_memory_line(cfg, sp))
        if not st.reuse_checkpoint and 0 < sp.samples < st.global_batch_size:
            lines.append(f"  note: fewer samples than one global batch ({st.global_batch_size}): training would stop here")
        for s in sp.sources:
            if s.report is not None and s.report.bad:
                lines.append(f"  bad in {Path(s.path).name}: {s.report.summary()}; first: {s.report.examples[0]}")
    trained = [sp for sp in plans if not sp.stage.reuse_checkpoint]
    total = sum(sp.samples for sp in trained)
    steps = sum(sp.steps for sp in trained)
    lines.append("")
    lines.append(f"trained in this run: {', '.join(sp.stage.name for sp in trained) or 'nothing'}: "
                 f"{total:,} samples, {steps:,} optimizer steps")
    return "\n".join(lines)


def _image_memory_line(cfg: TrainConfig, sp: StagePlan) -> str:
    """What train/data.py's loader will hold: the whole preprocessed cache, or the steps in flight."""
    size = _preset(cfg.preset).image_size
    per_image = 3 * size * size * 4
    total = sp.unique_images * per_image
    head = (f"  images: {sp.unique_images:,} distinct, {_human(total, 1024)}B preprocessed at {size} px fp32: ")
    if fits_cache(sp.unique_images, per_image, cfg.image_cache_mib):
        return head + (f"within image_cache_mib {cfg.image_cache_mib:g}, so the loader preprocesses them once and "
                       "keeps them in memory")
    if cfg.num_workers is None:
        workers, why = resolve_workers(None, "cuda"), "unset: 4 per process on CUDA, 0 on CPU"
    else:
        workers, why = cfg.num_workers, "from the config"
    steps, batch = steps_in_flight(workers), sp.stage.global_batch_size
    return head + (f"above image_cache_mib {cfg.image_cache_mib:g}, so the loader reads them per step: at most "
                   f"{steps} step(s) x {batch} images = {_human(steps * batch * per_image, 1024)}B per process "
                   f"(num_workers {workers}, {why}; a torchrun rank holds 1/world_size of it)")


def check_plan(plans: list[StagePlan], skip_bad: bool = False) -> None:
    """Stop as training would: a source past its bad-record threshold is one DataError naming it."""
    if skip_bad:
        return
    for sp in plans:
        for s in sp.sources:
            if s.report is not None:  # no threshold: any bad record stops, as in training
                s.report.check(0.0 if s.max_bad_fraction is None else s.max_bad_fraction)


def dry_run(cfg: TrainConfig, config: str, declared: bool = False, skip_bad: bool = False) -> None:
    """Print the plan of ``cfg``; raise DataError (after printing the counts) where training would stop."""
    plans = plan_stages(cfg, declared, config)
    print(format_plan(cfg, plans, config, declared), flush=True)
    check_plan(plans, skip_bad)
