"""Experiment: GPTQ calibrated on ALLaVA-4V samples with their images vs on the same text alone.

  python bench/experiments/gptq_calibration.py [--checkpoint outputs/tiny] [--bits 4] [--seeds 0,1,2] [--n-samples 128]

For each seed and calibration kind, quantizes the checkpoint with the project's command
(quantize/gptq_quantizer.py; the seed picks the calibration records, the same ones for both kinds)
and scores every held-out question of the built-in world (exact match, greedy) with the quantized
model, the share of answers identical to the full-precision model's, and the reference answers'
mean negative log-likelihood (teacher-forced; a continuous measure that moves before exact match). Prints one row per run and
the mean difference multimodal - text-only; docs/experiments.md records the result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def heldout_predictions(model, processor, items) -> dict[str, str]:
    from allava.evaluate import predict_torch

    return predict_torch(model, processor, items, progress=False)


def answer_nll(model, processor, items, batch_size: int = 64) -> float:
    """Mean negative log-likelihood per token of the reference answers (teacher-forced): a continuous
    measure that moves before exact match does."""
    import torch
    from PIL import Image

    from allava.chat import EOS, prompt_text

    total, count = 0.0, 0
    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "right"
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            images = [Image.open(it.image).convert("RGB") for it in chunk]
            prompts = [prompt_text(it.question) for it in chunk]
            full = [f"{p} {it.answer}{EOS}" for p, it in zip(prompts, chunk, strict=True)]
            n_prompt = [processor(images=im, text=p, return_tensors="pt")["input_ids"].shape[1]
                        for im, p in zip(images, prompts, strict=True)]
            enc = processor(images=images, text=full, return_tensors="pt", padding=True)
            with torch.inference_mode():
                logp = model(**enc).logits.float().log_softmax(-1)
            for i, n0 in enumerate(n_prompt):
                n = int(enc["attention_mask"][i].sum())
                target = enc["input_ids"][i, n0:n]
                total -= float(logp[i, n0 - 1 : n - 1].gather(-1, target[:, None]).sum())
                count += n - n0
    finally:
        tok.padding_side = side
    return total / max(count, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("outputs/tiny"))
    ap.add_argument("--world", type=Path, default=Path("outputs/world"))
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-samples", type=int, default=128)
    ap.add_argument("--output-dir", type=Path, default=Path("outputs/bench/gptq-calibration"))
    a = ap.parse_args()
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from allava.evaluate import load_heldout, normalize_answer, score
    from runtimes.gptq_runtime import GptqRuntime

    items = load_heldout(a.world / "ALLaVA-Heldout-World.json")
    processor = AutoProcessor.from_pretrained(a.checkpoint)
    ref_model = LlavaForConditionalGeneration.from_pretrained(a.checkpoint, dtype=torch.float32).eval()
    ref = heldout_predictions(ref_model, processor, items)
    ref_em = score(items, ref)["exact_match"]
    ref_nll = answer_nll(ref_model, processor, items)
    del ref_model
    print(f"full precision: {ref_em:.2f}% exact match on {len(items)} held-out questions; answer NLL {ref_nll:.4f}")
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        for kind in ("multimodal", "text"):
            out = a.output_dir / f"W{a.bits}G{a.group_size}-{kind}-seed{seed}"
            cmd = [sys.executable, "-m", "quantize.gptq_quantizer", str(a.checkpoint), "--outdir", str(out),
                   "--bits", str(a.bits), "--group-size", str(a.group_size), "--seed", str(seed),
                   "--n-samples", str(a.n_samples), "--calibration", str(a.world / "ALLaVA-Instruct-World.json")]
            if kind == "text":
                cmd.append("--text-only")
            if not (out / "manifest.json").is_file():
                subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
            rt = GptqRuntime().load(out)
            preds = heldout_predictions(rt.model, rt.processor, items)
            em = score(items, preds)["exact_match"]
            same = 100.0 * sum(normalize_answer(preds[k]) == normalize_answer(ref[k]) for k in ref) / len(ref)
            nll = answer_nll(rt.model, rt.processor, items)
            rows.append({"seed": seed, "kind": kind, "exact_match": em, "delta": em - ref_em, "same_answers": same,
                         "answer_nll": nll, "nll_increase": nll - ref_nll})
            print(f"seed {seed} {kind:<10} exact match {em:6.2f} (delta {em - ref_em:+.2f})  same answers as fp32 "
                  f"{same:.2f}%  answer NLL +{nll - ref_nll:.4f}", flush=True)
            del rt
    mm = [r for r in rows if r["kind"] == "multimodal"]
    tx = [r for r in rows if r["kind"] == "text"]
    diff = [m["exact_match"] - t["exact_match"] for m, t in zip(mm, tx, strict=True)]
    summary = {"reference_exact_match": ref_em, "n_items": len(items), "bits": a.bits, "group_size": a.group_size,
               "n_samples": a.n_samples, "rows": rows,
               "mean_delta_multimodal": statistics.mean(r["delta"] for r in mm),
               "mean_delta_text": statistics.mean(r["delta"] for r in tx),
               "mean_same_multimodal": statistics.mean(r["same_answers"] for r in mm),
               "mean_same_text": statistics.mean(r["same_answers"] for r in tx),
               "reference_answer_nll": ref_nll,
               "mean_nll_increase_multimodal": statistics.mean(r["nll_increase"] for r in mm),
               "mean_nll_increase_text": statistics.mean(r["nll_increase"] for r in tx),
               "multimodal_minus_text_per_seed": diff}
    print(f"mean over {len(mm)} seeds: multimodal {summary['mean_delta_multimodal']:+.2f} points, text-only "
          f"{summary['mean_delta_text']:+.2f} points vs full precision; same answers {summary['mean_same_multimodal']:.2f}% "
          f"vs {summary['mean_same_text']:.2f}%; answer NLL +{summary['mean_nll_increase_multimodal']:.4f} vs "
          f"+{summary['mean_nll_increase_text']:.4f}; multimodal - text per seed: {', '.join(f'{d:+.2f}' for d in diff)}")
    a.output_dir.mkdir(parents=True, exist_ok=True)
    (a.output_dir / "results.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
