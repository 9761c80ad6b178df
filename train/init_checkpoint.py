"""Write a random-weight (untrained) checkpoint of a model preset: a plain Hugging Face model folder.

    python train/init_checkpoint.py --preset allava-3b --output-dir outputs/bench-allava3b/hf --dtype bf16
    python train/init_checkpoint.py --preset tiny --output-dir /tmp/tiny-random

Why: export, quantization, parity and latency work need a model of the right shape, not a trained
one, and the full-size preset would otherwise need a 6 GB download. The folder is what
`python train/run.py` writes (LlavaForConditionalGeneration, processor, tokenizer with the chat
template), seeded, so the same command gives the same weights. The tokenizer is a small BPE trained
on a fixed corpus; its rows are padded to the preset's vocabulary (51,200 for ALLaVA-3B).
"""

from __future__ import annotations

import argparse
import sys
import time

from allava.modeling import available_presets

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python train/init_checkpoint.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=available_presets(), help="model preset (default tiny)")
    ap.add_argument("--output-dir", required=True, help="the Hugging Face folder to write (replaced if it exists)")
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES),
                    help="weight dtype (default fp32; bf16 halves memory and disk for the full-size preset)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import torch

    from allava.modeling import save_random_checkpoint

    t0 = time.time()
    out = save_random_checkpoint(a.output_dir, a.preset, seed=a.seed, dtype=getattr(torch, DTYPES[a.dtype]))
    print(f"wrote {out} ({a.preset}, random init, {a.dtype}, seed {a.seed}) in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
