"""The training loop: one stage at a time, resumable, single process / DDP (torchrun) / DeepSpeed.

The sample order of a stage is fixed up front from the seed, so the data position of a checkpoint
is just its step; a resumed run draws exactly the batches the uninterrupted run would have drawn.
Each rank takes its share of every global batch, so the batches do not depend on the world size.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from allava.fileio import disk_full_as, write_text_atomic
from allava.hardware import cpu_has_native_bf16
from allava.schema import DataError
from train.config import StageConfig
from train.data import IGNORE_INDEX, StageData, collate, epoch_order
from train.features import encoder_outputs_from_features
from train.images import ImageBatch, stream_steps


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 where the hardware computes in it (CUDA with bf16, AMX/AVX512-BF16 CPUs),
    fp16 on older GPUs, fp32 on other CPUs. Other values pass through."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision fp16 needs CUDA; use bf16 or fp32 on CPU")
        return torch.float16
    raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}")


def lr_lambda(total_steps: int, warmup_steps: int, peak: float, floor: float):
    """Linear warm-up, then cosine decay from ``peak`` to ``floor`` (as a multiplier of peak)."""

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        frac = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return (floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))) / peak

    return fn


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


class StageRunner:
    """Runs one training stage with checkpoints every ``save_every`` steps."""

    def __init__(
        self,
        model: torch.nn.Module,
        stage: StageConfig,
        data: StageData,
        ckpt_root: Path,
        metrics_path: Path,
        dist_info: DistInfo,
        precision: str,
        seed: int,
        save_every: int,
        keep: int,
        pad_id: int,
        deepspeed_config: str | None = None,
        progress: bool = True,
        num_workers: int = 0,
    ) -> None:
        self.model = model
        self.num_workers = num_workers
        self.stage = stage
        self.data = data
        self.dir = ckpt_root / stage.name
        self.metrics_path = metrics_path
        self.dist = dist_info
        self.device = next(model.parameters()).device
        self.amp = autocast_dtype(precision, self.device)
        self.save_every = save_every
        self.keep = keep
        self.pad_id = pad_id
        self.progress = progress and dist_info.is_main
        lengths = [len(e.input_ids) for e in data.examples] if stage.group_by_length else None
        self.order = epoch_order(len(data.examples), stage.epochs, seed, lengths, stage.global_batch_size)
        g = stage.global_batch_size
        if g % (dist_info.world_size * stage.micro_batch_size):
            raise ValueError(
                f"stage {stage.name}: global_batch_size {g} must be a multiple of "
                f"world_size {dist_info.world_size} x micro_batch_size {stage.micro_batch_size}"
            )
        self.accum = g // (dist_info.world_size * stage.micro_batch_size)
        self.total_steps = len(self.order) // g
        if stage.max_steps is not None:
            self.total_steps = min(self.total_steps, stage.max_steps)
        if self.total_steps < 1:
            raise ValueError(f"stage {stage.name}: {len(self.order)} samples is less than one global batch of {g}")
        params = [p for p in model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay, betas=(0.9, stage.adam_beta2))
        warmup = max(1, round(stage.warmup_ratio * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.total_steps, warmup, stage.lr, stage.min_lr)
        )
        self.engine = None
        self.ddp = None
        if deepspeed_config:
            import deepspeed  # optional: pip install '.[deepspeed]'

            ds_cfg = json.loads(Path(deepspeed_config).read_text())
            ds_cfg["train_micro_batch_size_per_gpu"] = stage.micro_batch_size
            ds_cfg["gradient_accumulation_steps"] = self.accum
            ds_cfg["train_batch_size"] = g
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model, optimizer=self.optimizer, lr_scheduler=self.scheduler, config=ds_cfg
            )
        elif dist_info.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # text-only micro-batches (the Text files) leave the projector without gradient
            self.ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        self.step = 0

    # -- checkpoints -------------------------------------------------------------------------
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.model.named_parameters() if v.requires_grad}

    def save(self) -> None:
        """Write step-N atomically: a temp folder renamed into place, then 'latest' updated (atomically
        too). A full disk removes the temp folder and leaves the previous checkpoint and 'latest' as they
        were, so --resume continues from there once there is room."""
        if self.engine is not None:
            self.engine.save_checkpoint(str(self.dir), tag=f"step-{self.step}")
        if not self.dist.is_main:
            return
        target = self.dir / f"step-{self.step}"
        tmp = self.dir / f".tmp-step-{self.step}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with disk_full_as(target, partial=tmp):
                self._write_checkpoint(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        write_text_atomic(self.dir / "latest", target.name)
        steps = sorted((p for p in self.dir.glob("step-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
        for old in steps[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _write_checkpoint(self, tmp: Path) -> None:
        """The files of one checkpoint, into the temp folder ``save`` renames."""
        tmp.mkdir(parents=True)
        save_file(self._trainable_state(), str(tmp / "trainable.safetensors"))
        if self.engine is None:
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        rng = _rng_state()
        torch.save({"torch": rng["torch"], "cuda": rng["cuda"]}, tmp / "rng.pt")
        state = {
            "stage": self.stage.name,
            "step": self.step,
            "total_steps": self.total_steps,
            "samples_seen": self.step * self.stage.global_batch_size,
            "python_rng": repr(rng["python"]),
            # streamed images found bad so far: counted again on resume (those steps are not re-read)
            "image_read_failures": {str(i): m for i, m in self.data.read_failures.items()},
        }
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))

    def try_resume(self) -> bool:
        """Restore the latest checkpoint of this stage, if any. Returns True when restored."""
        latest = self.dir / "latest"
        if not latest.is_file():
            return False
        ckpt = self.dir / latest.read_text().strip()
        state = json.loads((ckpt / "trainer_state.json").read_text())
        weights = load_file(str(ckpt / "trainable.safetensors"))
        missing = set(self._trainable_state()) - set(weights)
        if missing:
            raise RuntimeError(f"{ckpt}: checkpoint lacks trainable tensors {sorted(missing)[:3]}...")
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in weights:
                    p.copy_(weights[name].to(p.device, p.dtype))
        if self.engine is not None:
            self.engine.load_checkpoint(str(self.dir), tag=ckpt.name)
        else:
            self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        rng = torch.load(ckpt / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(state["step"])
        for i, problem in state.get("image_read_failures", {}).items():
            self.data.count_read_failure(int(i), problem)
        self._truncate_metrics()
        return True

    def _truncate_metrics(self) -> None:
        """Drop metric lines logged after the checkpoint, so a resumed curve has no duplicates."""
        if not self.dist.is_main or not self.metrics_path.is_file():
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            row = json.loads(line)
            if row.get("stage") == self.stage.name and row.get("step", 0) > self.step:
                continue
            keep.append(line)
        self.metrics_path.write_text("".join(k + "\n" for k in keep))

    # -- training ----------------------------------------------------------------------------
    def _all_sum(self, value: float) -> float:
        """Sum of a scalar over ranks (the value itself in a single process)."""
        if self.dist.world_size == 1 or not dist.is_initialized():
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t.item())

    def _groups(self, step: int) -> list[list[int]]:
        """This rank's examples of a step, cut into micro-batches (example indices)."""
        g = self.stage.global_batch_size
        ids = self.order[step * g : (step + 1) * g]
        per_rank = g // self.dist.world_size
        mine = ids[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]
        # Sorted by length before the split, so long records (complex reasoning answers) pad only
        # the micro-batch they share with each other; run() weights every micro-batch by its share
        # of the step's label tokens, so the gradient is the step's token mean whatever the split.
        mine = sorted(mine, key=lambda i: len(self.data.examples[i].input_ids))
        mb = self.stage.micro_batch_size
        budget = self.stage.micro_batch_tokens if self.engine is None else None
        groups: list[list[int]] = []
        for i in mine:
            # sorted ascending, so adding record i pads the group to len(i)
            width = len(self.data.examples[i].input_ids)
            if groups and len(groups[-1]) < mb and (budget is None or (len(groups[-1]) + 1) * width <= budget):
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _step_rows(self, step: int) -> list[int]:
        """The distinct image rows a step needs on this rank, in first-use order."""
        rows = (self.data.examples[i].image for grp in self._groups(step) for i in grp)
        return list(dict.fromkeys(r for r in rows if r is not None))

    def _image_stream(self):
        """Streaming mode: an iterator of each step's images from ``self.step`` on; None when cached."""
        if self.data.images is None:
            return None
        steps = (self._step_rows(s) for s in range(self.step, self.total_steps))
        return stream_steps(self.data.images, steps, self.num_workers)

    def _count_read_failures(self, failures: list[tuple[int, str]]) -> None:
        """Count the step's unreadable images; every rank stops together when one rank must stop."""
        err: DataError | None = None
        try:
            for i, problem in failures:
                self.data.count_read_failure(i, problem)
        except DataError as exc:
            err = exc
        if self.dist.world_size > 1 and self._all_sum(float(err is not None)) > 0 and err is None:
            err = DataError(f"rank {self.dist.rank}", None, "another rank stopped on a bad image (its message above)")
        if err is not None:
            raise err

    def _micro_batches(self, step: int, images: ImageBatch | None = None) -> list[dict[str, torch.Tensor]]:
        groups = self._groups(step)
        if images is None:  # cache mode: every image (or its features) is a row of one tensor
            if self.data.image_features is not None:
                rows, key = self.data.image_features, "image_features"
            else:
                rows, key = self.data.pixel_values, "pixel_values"
            return [collate([self.data.examples[i] for i in g], rows, self.pad_id, key) for g in groups]
        examples = self.data.examples
        failures = [(i, images.bad[examples[i].image]) for g in groups for i in g if examples[i].image in images.bad]
        self._count_read_failures(failures)
        bad = {i for i, _ in failures}
        kept = [[i for i in g if i not in bad] for g in groups]
        return [collate([examples[i] for i in g], images.pixels, self.pad_id, "pixel_values", images.pos)
                for g in kept if g]

    def _embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.engine is not None or self.ddp is not None:
            raise ValueError("cached vision features are for single-process runs; DDP/DeepSpeed take pixels")
        batch = dict(batch)
        batch["mm_encoder_outputs"] = encoder_outputs_from_features(self.model, batch.pop("image_features"))
        return batch

    def run(self, stop_after: int | None = None) -> None:
        """Train to the end of the stage (or until ``stop_after`` steps, to simulate a crash)."""
        forward = self.engine or self.ddp or self.model
        self.model.train()
        bar = tqdm(
            total=self.total_steps, initial=self.step, desc=f"stage {self.stage.name}", disable=not self.progress,
            unit="step", dynamic_ncols=True,
        )
        tokens_window, t_window = 0, time.time()
        metrics = self.metrics_path.open("a") if self.dist.is_main else None
        stream = self._image_stream()
        while self.step < self.total_steps:
            if stop_after is not None and self.step >= stop_after:
                break
            try:
                batches = self._micro_batches(self.step, next(stream) if stream is not None else None)
            except DataError:  # a streamed image stopped the run: its one-line error on a line of its own
                bar.close()
                if metrics is not None:
                    metrics.close()
                raise
            loss_sum, n_tokens = 0.0, 0
            # label tokens the model's shifted loss averages over, per micro-batch
            n_labels = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches]
            # over all ranks: DDP / DeepSpeed average gradients across ranks, so each rank's share
            # carries a world_size factor and the step is the global token mean, as in one process
            total_labels = max(1, self._all_sum(float(sum(n_labels))))
            for k, batch in enumerate(batches):
                share = n_labels[k] * self.dist.world_size / total_labels
                batch = {key: v.to(self.device) for key, v in batch.items()}
                n_tokens += int(batch["attention_mask"].sum())
                sync = k == len(batches) - 1
                ctx = self.ddp.no_sync() if (self.ddp is not None and not sync) else _null()
                with ctx:
                    with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                        if "image_features" in batch:  # cached frozen-tower features (train/features.py)
                            batch = self._embed(batch)
                        loss = label_token_loss(forward, batch)
                    if self.engine is not None:
                        self.engine.backward(loss * share * len(batches))  # DeepSpeed divides by its accumulation steps
                        self.engine.step()
                    else:
                        (loss * share).backward()
                loss_sum += loss.item() * share
            loss_sum = self._all_sum(loss_sum) / self.dist.world_size  # the logged loss is the global one
            if self.engine is None:
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            tokens_window += n_tokens * self.dist.world_size
            lr = self.scheduler.get_last_lr()[0]
            if metrics is not None:
                metrics.write(json.dumps({"stage": self.stage.name, "step": self.step, "loss": loss_sum, "lr": lr}) + "\n")
                metrics.flush()
            elapsed = time.time() - t_window
            bar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_window / max(elapsed, 1e-9):,.0f}")
            bar.update()
            if self.step % self.save_every == 0 and self.step < self.total_steps:
                self.save()
        bar.close()
        if metrics is not None:
            metrics.close()


def label_token_loss(forward, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's causal-LM loss (mean over label tokens), with logits only where a label follows.

    Why: in the default's stage 2 a record is ~40 tokens of which 1-3 are answer tokens, and the
    vocabulary projection plus its log-softmax over every position was ~11% of a step (measured
    saving: 5% of a step, with eager attention and the fused GELU already in). The value
    and gradient are those of ``model(**batch).loss`` (``tests/train/test_training.py``).
    """
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # position t predicts token t + 1
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = forward(**inputs, logits_to_keep=keep).logits
    return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][keep[:, :-1]])


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
