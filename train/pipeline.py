"""The whole training job: world -> tokenizer -> model -> stage 0 -> stage 1 -> stage 2 -> eval -> HF folder.

State lives on disk under ``output_dir``: ``checkpoints/`` (resumable), ``metrics.jsonl``,
``loss.png``, ``eval_results.json`` and, at the end, a plain Hugging Face model folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from allava.evaluate import format_table, load_heldout, predict_torch, score
from allava.fileio import disk_full_as, write_json_atomic
from allava.modeling import (
    build_model,
    build_processor,
    count_parameters,
    freeze_vision_tower,
    load_preset,
    projector_inputs,
)
from allava.schema import IMAGE_MARKER, DataError
from allava.tokenizer import load_pretrained_tokenizer, train_bpe_tokenizer
from train.config import TrainConfig, to_dict
from train.data import Source, build_stage_data
from train.features import vision_features
from train.images import resolve_workers
from train.plots import plot_loss
from train.trainer import DistInfo, StageRunner, autocast_dtype, resolve_precision, setup_distributed
from train.vision_pretrain import pretrain_vision_tower

BASE_DIR = "base"  # the untrained-LM starting point: tokenizer, processor, (pre-trained) vision tower


def log(msg: str, info: DistInfo) -> None:
    if info.is_main:
        print(msg, flush=True)


def prepare_world(cfg: TrainConfig) -> Path:
    root = Path(cfg.data_root)
    if cfg.world:
        from allava.world import WorldSpec, build_world

        spec = WorldSpec() if cfg.world_scenes is None else WorldSpec(train_scenes=cfg.world_scenes)
        build_world(root, spec)
    return root


def make_tokenizer(preset, cfg: TrainConfig, data_root: Path):
    """The world BPE for ``tiny``; the hub tokenizer for pretrained presets.

    A ``--random-init`` build of a pretrained preset cannot download its tokenizer, so it also
    uses a world BPE; the embedding keeps the preset's full vocabulary rows (51,200 for Phi-2).
    """
    kind = preset.tokenizer.get("kind")
    if kind == "pretrained" and not cfg.random_init:
        return load_pretrained_tokenizer(preset.pretrained["text"])
    from allava.chat import render_segments
    from train.sources import read_source

    # Train on the conversations as the chat template renders them, so the template's own tags
    # ("USER:", "ASSISTANT:") get merges of their own: measured 326 -> 229 tokens per multi-turn
    # VQA record (with raw turn values they were spelled letter by letter).
    texts: list[str] = []
    files = {data_root / s.path: s.format for stage in cfg.stages for s in stage.sources}
    for path, fmt in files.items():
        records = read_source(path, fmt, collect=True).records
        texts += [seg.text for r in records for seg in render_segments(r.conversations)]
    vocab = int(preset.tokenizer.get("vocab_size", 1024)) if kind == "world-bpe" else 4096
    return train_bpe_tokenizer(texts, vocab)


def build_base(cfg: TrainConfig, data_root: Path, device: torch.device, info: DistInfo) -> tuple:
    """Model + processor at the start of stage 1; cached in ``output_dir/base`` for resumes."""
    out = Path(cfg.output_dir)
    base = out / BASE_DIR
    if (base / "config.json").is_file():
        model = LlavaForConditionalGeneration.from_pretrained(base)
        processor = AutoProcessor.from_pretrained(base)
        return model.to(device), processor
    preset = load_preset(cfg.preset)
    tokenizer = make_tokenizer(preset, cfg, data_root)
    processor = build_processor(preset, tokenizer)
    model = build_model(preset, tokenizer, random_init=cfg.random_init or not preset.pretrained, seed=cfg.seed)
    total, _ = count_parameters(model)
    log(f"model: preset {preset.name}, {total / 1e6:,.1f}M parameters", info)
    model.to(device)
    _set_attention(model, cfg)
    if cfg.vision_pretrain is not None:
        from train.data import load_image, preprocess_images
        from train.vision_pretrain import fresh_scenes

        if cfg.vision_pretrain.fresh_scenes > 0:
            scenes, images = fresh_scenes(cfg.vision_pretrain, model.config.vision_config.image_size)
        else:
            scenes_file = data_root / "scenes.jsonl"
            scenes = [json.loads(line) for line in scenes_file.read_text().splitlines() if line.strip()]
            scenes = [s for s in scenes if "_train_" in s["id"]]
            images, kept = [], []
            for s in scenes:  # the same checks, messages and --skip-bad behaviour as the stage data
                try:
                    images.append(load_image(data_root / s["image"], str(scenes_file), s["id"]))
                    kept.append(s)
                except DataError:
                    if not cfg.skip_bad:
                        raise
            scenes = kept
        pixels = preprocess_images(images, processor.image_processor, progress=info.is_main).to(device)
        del images
        from train.vision_pretrain import embedding_targets, patch_words

        projector, targets = None, None
        if cfg.vision_pretrain.align_projector:
            vcfg = model.config.vision_config
            words = patch_words(scenes, vcfg.image_size, vcfg.patch_size)
            embeddings = model.model.language_model.embed_tokens.weight.detach()
            targets = embedding_targets(words, lambda t: tokenizer(t, add_special_tokens=False)["input_ids"], embeddings)
            projector, targets = model.model.multi_modal_projector, targets.to(device)
        t0 = time.time()
        acc, heads = pretrain_vision_tower(
            model.model.vision_tower, pixels, scenes, model.config.vision_feature_layer, cfg.vision_pretrain,
            log_path=out / "metrics.jsonl" if info.is_main else None, progress=info.is_main,
            projector=projector, embed_targets=targets, amp_dtype=autocast_dtype(cfg.precision, device),
        )
        log(f"stage 0 (vision pre-training) done in {time.time() - t0:.0f}s; patch accuracy: "
            + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()), info)
        if cfg.vision_pretrain.projector_init == "heads":
            from train.vision_pretrain import init_projector_from_heads

            with torch.no_grad():
                sample = pixels[torch.randperm(pixels.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:512]]
                feats = projector_inputs(model, sample).flatten(0, 1)
            used = init_projector_from_heads(model.model.multi_modal_projector, heads, feats)
            log(f"projector initialised from the stage-0 heads ({sum(used.values())} hidden units: "
                + ", ".join(f"{k} {v}" for k, v in used.items()) + ")", info)
    if info.is_main:
        tmp = out / f".tmp-{BASE_DIR}"
        with _temp_removed_on_error(tmp), disk_full_as(base, partial=tmp):
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
        os.replace(tmp, base)
    if info.world_size > 1:
        torch.distributed.barrier()
        model = LlavaForConditionalGeneration.from_pretrained(base).to(device)  # identical on every rank
    return model, processor


def run_training(cfg: TrainConfig, resume: bool = False, stop_after: tuple[str, int] | None = None) -> dict | None:
    """Run every stage; returns the eval results (on rank 0). ``stop_after`` simulates a crash."""
    info = setup_distributed()
    device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    if info.is_main:
        if not resume and ckpt_root.exists():
            shutil.rmtree(ckpt_root)
            (out / "metrics.jsonl").unlink(missing_ok=True)
            shutil.rmtree(out / BASE_DIR, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_config.json", to_dict(cfg))
    t_start = time.time()
    data_root = prepare_world(cfg) if info.is_main else Path(cfg.data_root)
    if info.world_size > 1:
        torch.distributed.barrier()
    log(f"precision: {resolve_precision(cfg.precision, device)} (config: {cfg.precision}), "
        f"{torch.get_num_threads()} CPU threads" if device.type == "cpu" else f"precision: {resolve_precision(cfg.precision, device)}", info)
    model, processor = build_base(cfg, data_root, device, info)
    _set_attention(model, cfg)
    freeze_vision_tower(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    total, trainable = count_parameters(model)
    log(f"parameters: {total:,} total, {trainable:,} trainable (vision tower frozen)", info)
    tokenizer = processor.tokenizer
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_MARKER)
    n_image_tokens = model.config.image_seq_length
    for k, stage in enumerate(cfg.stages):
        done_marker = ckpt_root / stage.name / "done.safetensors"
        if done_marker.is_file():
            _load_trainable(model, done_marker)
            log(f"stage {stage.name}: already complete, weights restored", info)
            continue
        if stage.reuse_checkpoint:
            shared = Path(stage.reuse_checkpoint)
            if not shared.is_file():
                raise DataError(shared, None, f"stage {stage.name} reuses this finished stage's weights "
                                "(reuse_checkpoint), but it is not there: run that config first")
            _load_trainable(model, shared)
            log(f"stage {stage.name}: weights taken from {shared} (reuse_checkpoint), not trained again", info)
            continue
        sources = [
            Source(str(data_root / s.path), s.ratio, str(data_root / s.image_root) if s.image_root else None,
                   s.format, s.max_bad_fraction if s.max_bad_fraction is not None else cfg.max_bad_fraction)
            for s in stage.sources
        ]
        data = build_stage_data(
            sources, tokenizer, processor.image_processor, image_token_id, n_image_tokens, stage.max_length,
            seed=cfg.seed + k, skip_bad=cfg.skip_bad, progress=info.is_main, image_cache_mib=cfg.image_cache_mib,
        )
        workers = resolve_workers(cfg.num_workers, device.type)
        if data.images is not None:
            log(f"stage {stage.name}: {len(data.images):,} images above image_cache_mib {cfg.image_cache_mib:g}: "
                f"read per step with {workers} DataLoader worker(s)"
                + ("; cache_vision_features off (it needs the cache)" if cfg.cache_vision_features else ""), info)
        if cfg.cache_vision_features and data.pixel_values is not None:
            if info.world_size > 1 or cfg.deepspeed:
                log("cache_vision_features: off for DDP / DeepSpeed runs (they take pixels)", info)
            else:
                data.image_features = vision_features(
                    model, data.pixel_values, autocast_dtype(cfg.precision, device), progress=info.is_main
                )
                data.pixel_values = None
        log(f"stage {stage.name}: {data.stats}", info)
        for rep in data.reports:
            if rep.bad:
                log(f"  {rep.path}: {rep.bad} of {rep.records} records bad ({rep.summary()})", info)
        for msg in data.skipped[:5]:
            log(f"  skipped: {msg}", info)
        runner = StageRunner(
            model, stage, data, ckpt_root, out / "metrics.jsonl", info, cfg.precision, cfg.seed + k,
            cfg.save_every, cfg.keep_checkpoints, tokenizer.pad_token_id, cfg.deepspeed, num_workers=workers,
        )
        if resume and runner.try_resume():
            log(f"stage {stage.name}: resumed at step {runner.step}/{runner.total_steps}", info)
        t0 = time.time()
        limit = stop_after[1] if stop_after and stop_after[0] == stage.name else None
        runner.run(stop_after=limit)
        if runner.step < runner.total_steps:
            runner.save()
            log(f"stage {stage.name}: stopped at step {runner.step} (checkpoint saved)", info)
            return None
        log(f"stage {stage.name}: {runner.total_steps} steps in {time.time() - t0:.0f}s", info)
        if data.read_failures:
            for rep in data.reports:
                if rep.bad:
                    log(f"  {rep.path}: {rep.bad} of {rep.records} records bad ({rep.summary()}), "
                        "images read during the stage included", info)
        if info.is_main:
            done_marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = done_marker.with_suffix(".tmp")
            with _temp_removed_on_error(tmp), disk_full_as(done_marker, partial=tmp):
                save_file(runner._trainable_state(), str(tmp))
            os.replace(tmp, done_marker)
        if info.world_size > 1:
            torch.distributed.barrier()
    results = None
    if info.is_main:
        model.eval()
        save_hf_folder(model, processor, out)
        plot_loss(out / "metrics.jsonl", out / "loss.png")
        results = evaluate_heldout(cfg, model, processor, data_root)
        results["train_seconds"] = round(time.time() - t_start, 1)
        write_json_atomic(out / "eval_results.json", results)
        if results.get("heldout"):
            print(format_table(results["heldout"]), flush=True)
        print(f"done in {results['train_seconds']:.0f}s -> {out}", flush=True)
    if info.world_size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return results


def _set_attention(model, cfg: TrainConfig) -> None:
    if cfg.attn_implementation:
        model.set_attn_implementation(cfg.attn_implementation)


def _load_trainable(model: torch.nn.Module, path: Path) -> None:
    weights = load_file(str(path))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in weights:
                p.copy_(weights[name].to(p.device, p.dtype))


@contextmanager
def _temp_removed_on_error(tmp: Path) -> Iterator[None]:
    """A temporary file or folder that is removed before the block and again if the block fails (a full
    disk, a crash in a writer), so a failed save leaves nothing half-written behind."""
    _remove(tmp)
    try:
        yield
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def save_hf_folder(model, processor, out: Path) -> None:
    """Write the plain Hugging Face folder (safetensors, config, processor, tokenizer, template)."""
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.do_sample = False
    tmp = out / ".tmp-hf"
    with _temp_removed_on_error(tmp), disk_full_as(out, partial=tmp):
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()


def evaluate_heldout(cfg: TrainConfig, model, processor, data_root: Path) -> dict:
    if not cfg.eval.file:
        return {"heldout": None, "note": "no eval.file configured"}
    items = load_heldout(data_root / cfg.eval.file, limit=cfg.eval.limit)
    t0 = time.time()
    preds = predict_torch(model, processor, items, cfg.eval.max_new_tokens, cfg.eval.batch_size)
    result = score(items, preds)
    return {"heldout": result, "eval_file": str(data_root / cfg.eval.file), "eval_seconds": round(time.time() - t0, 1)}
