"""Checks (1) and (2) of a CoreML export, on a few synthetic prompts at the model's native image size.

(1) The PyTorch programs the packages are converted from (export/coreml_wrappers.py: separate
    vision program, merge outside, stateful cache) give the Hugging Face model's greedy tokens.
(2) The saved packages, executed by the reference MIL evaluator (runtimes/coreml_mil.py), give
    them too (fp16/int8 should; int4/palette4 report how far they drift), with the first-token
    logit error against Hugging Face.

The three get identical inputs: token ids and pixel values from allava.preprocess (the HF
processor's steps), and the same greedy loop (allava.coreml_layout.generate_greedy) for (1) and (2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from allava.coreml_layout import EMBED_PACKAGE, VISION_PACKAGE, generate_greedy
from allava.preprocess import ImagePreprocessor, PromptTokenizer
from export.coreml_wrappers import torch_programs

N_TOKENS = 16


def _hf_greedy(model: Any, ids: list[int], pixel_values: np.ndarray, n_tokens: int) -> tuple[list[int], np.ndarray]:
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             pixel_values=torch.from_numpy(pixel_values).to(next(model.parameters()).dtype),
                             max_new_tokens=n_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, len(ids):].tolist(), out.logits[0][0].float().numpy()


def verify_variant(model: Any, folder: Path, packages: list[str], chunk_layers: int, max_context: int, n: int,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """{"wrapper": ..., "reference_evaluator": ...} with per-check agreement and logit errors."""
    from export.parity import synthetic_prompts
    from runtimes.coreml_runtime import mil_programs

    tok, pre = PromptTokenizer.from_folder(folder), ImagePreprocessor.from_folder(folder)
    size = model.config.vision_config.image_size
    prompts = synthetic_prompts(n, size, seed=0)
    image_token = model.config.image_token_id
    eos = tok.eos_token_id
    impls = {"wrapper": torch_programs(model, chunk_layers, max_context),
             "reference_evaluator": mil_programs(folder, [p for p in packages if p not in (VISION_PACKAGE, EMBED_PACKAGE)])}
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in impls}
    for p in prompts:
        ids = tok.encode(p.prompt, with_image=True)
        px = pre(p.image)
        ref_tokens, ref_logits = _hf_greedy(model, ids, px, N_TOKENS)
        for name, programs in impls.items():
            g = generate_greedy(programs, ids, px, image_token, N_TOKENS, eos, max_context)
            rows[name].append({"id": p.id, "same_tokens": g.tokens == ref_tokens,
                               "first_logits_max_abs": float(np.abs(g.first_logits - ref_logits).max())})
    out: dict[str, Any] = {}
    for name, r in rows.items():
        out[name] = {"prompts": f"synthetic:{size}px:seed0", "n_prompts": len(r), "n_tokens": N_TOKENS,
                     "greedy_exact_rate": sum(x["same_tokens"] for x in r) / len(r),
                     "first_logits_max_abs": max(x["first_logits_max_abs"] for x in r), "per_prompt": r}
        log(f"  check {name:<20} greedy = HF on {sum(x['same_tokens'] for x in r)}/{len(r)} prompts "
            f"({N_TOKENS} tokens), first-token logits max |diff| {out[name]['first_logits_max_abs']:.2e}")
    return out
