"""Full-size ALLaVA-3B training step on CPU: build --random-init, forward + backward in bf16.

    python bench/experiments/train_step_allava3b.py [--seq-len 32] [--threads 2]

Prints the parameter count (about 3.1B), peak RSS and the time of one forward and one backward
pass on one 336 px image plus a short text, with the vision tower frozen as in the ALLaVA recipe.
A full fp32 AdamW step at this size needs ~45 GB (weights, grads, two moments); this machine has
24 GB, so the script stops at the backward pass. On GPUs ZeRO-1 shards the optimizer state.
"""

from __future__ import annotations

import argparse
import time

import torch

from runtimes.base import peak_rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=32, help="text tokens after the image")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from allava.modeling import build_model, count_parameters, freeze_vision_tower, load_preset
    from allava.tokenizer import train_bpe_tokenizer

    preset = load_preset("allava-3b")
    tokenizer = train_bpe_tokenizer(["a tiny corpus for a placeholder tokenizer"] * 4, 300)
    t0 = time.time()
    torch.set_default_dtype(torch.bfloat16)  # build straight in bf16: 6.2 GB instead of 12.4 GB
    model = build_model(preset, tokenizer, random_init=True, dtype=torch.bfloat16)
    torch.set_default_dtype(torch.float32)
    freeze_vision_tower(model)
    total, trainable = count_parameters(model)
    print(f"built allava-3b (random init, bf16) in {time.time() - t0:.1f}s: {total / 1e9:.3f}B parameters, "
          f"{trainable / 1e9:.3f}B trainable (vision tower frozen)")
    n_img = preset.num_image_tokens
    ids = torch.randint(2, 250, (1, n_img + args.seq_len))
    ids[0, 1 : 1 + n_img] = model.config.image_token_id
    pixels = torch.randn(1, 3, preset.image_size, preset.image_size, dtype=torch.bfloat16)
    labels = ids.clone()
    labels[0, : 1 + n_img] = -100
    t0 = time.time()
    out = model(input_ids=ids, pixel_values=pixels, labels=labels)
    t_fwd = time.time() - t0
    t0 = time.time()
    out.loss.backward()
    t_bwd = time.time() - t0
    grads = sum(p.grad.numel() for p in model.parameters() if p.grad is not None)
    rss = peak_rss_mb() / 1024
    print(f"sequence {ids.shape[1]} tokens ({n_img} image tokens): loss {out.loss.item():.3f}, "
          f"forward {t_fwd:.1f}s, backward {t_bwd:.1f}s, gradients for {grads / 1e9:.3f}B parameters, peak RSS {rss:.1f} GiB")


if __name__ == "__main__":
    main()
