"""Train a LLaVA-Phi model in ALLaVA's two stages.

    python train/run.py                                  # the built-in default: tiny preset, CPU, minutes
    python train/run.py --output-dir DIR --resume        # continue an interrupted run exactly
    torchrun --nproc_per_node 8 train/run.py --config train/configs/allava-3b.yaml   # the 3B recipe
    python train/run.py --config train/configs/allava-3b.yaml --dry-run   # its plan, no GPU

The output folder is a plain Hugging Face model folder (LlavaForConditionalGeneration +
AutoProcessor) with eval_results.json, metrics.jsonl and loss.png next to it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from allava.cli import exit_code, one_line
from allava.modeling import available_presets
from allava.schema import DataError

if TYPE_CHECKING:
    from train.config import TrainConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python train/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", help="YAML config (default: train/configs/<preset>.yaml)")
    ap.add_argument("--preset", choices=available_presets(), help="model preset (default: tiny)")
    ap.add_argument("--output-dir", help="where the HF model folder, checkpoints and metrics go")
    ap.add_argument("--data-root", help="folder the config's data paths are relative to")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")
    ap.add_argument("--random-init", action="store_true", help="build the preset randomly initialised (no downloads)")
    ap.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of stopping")
    ap.add_argument("--no-world", action="store_true", help="do not build the built-in world; use --data-root as is")
    ap.add_argument("--deepspeed", help="DeepSpeed JSON config (e.g. train/configs/zero1.json); launch with torchrun")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"],
                    help="autocast precision (default from config; auto: bf16 where the hardware has it, else fp32 on CPU)")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--max-steps", type=int, help="cap every stage at this many optimizer steps (smoke runs)")
    ap.add_argument("--save-every", type=int, help="checkpoint every N optimizer steps")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the plan (samples per source and stage, steps, tokens) from the data files, "
                         "with bad-record counts; no model, no GPU. Missing files: one line naming them, exit 2")
    ap.add_argument("--declared-sizes", action="store_true",
                    help="with --dry-run: plan from the releases' published record counts (train/data_catalog.py) "
                         "instead of the files")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from train.config import load_config

    try:
        cfg = load_config(args.config, args.preset)
    except ValueError as exc:  # a config missing, cut short or wrong: one line
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    for key in ("output_dir", "data_root", "deepspeed", "precision", "threads", "seed", "save_every"):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    if args.random_init:
        cfg.random_init = True
    if args.skip_bad:
        cfg.skip_bad = True
    if args.no_world:
        cfg.world = False
    if args.max_steps is not None:
        for stage in cfg.stages:
            stage.max_steps = args.max_steps
    if args.dry_run:
        from train.plan import dry_run

        name = args.config or f"train/configs/{cfg.preset}.yaml"
        return exit_code(lambda: dry_run(cfg, name, args.declared_sizes, cfg.skip_bad), DataError)
    return exit_code(lambda: _train(cfg, args.resume), DataError)


def _train(cfg: TrainConfig, resume: bool) -> None:
    """Train; a full disk that no writer named (metrics.jsonl, a library's own file) names the output folder."""
    from allava.fileio import disk_full_as
    from train.pipeline import run_training

    with disk_full_as(cfg.output_dir):
        run_training(cfg, resume=resume)


if __name__ == "__main__":
    sys.exit(main())
