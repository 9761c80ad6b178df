"""Parity of an export against its PyTorch checkpoint, through the common runtime interface.

Why teacher-forced top-1 with near-tie skipping: a random-weight (or barely trained) model has many
steps whose top-2 logits differ by less than numerical noise; free-running greedy decoding then
diverges after one harmless flip and every later token counts as a miss. Feeding the PyTorch tokens
to both runtimes and comparing the argmax per step, skipping steps where PyTorch's top-2 gap is
below `tie_eps`, measures the export instead of the noise. Free-running greedy agreement is
reported too, since it is what users see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from allava.chat import prompt_text, short_answer_prompt

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
           "purple": (140, 60, 180), "orange": (240, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20)}
SHAPES = ["circle", "square", "triangle"]
QUESTIONS = ["What colour is the {s}?", "How many shapes are there?", "Is there a {s} in the image?",
             "Describe the image.", "Where is the {s}?", "What shape is {c}?"]

# A PyTorch decision whose top-2 logit gap is below this is a near-tie: either answer is PyTorch's own coin
# flip (a 0.01 logit gap is a 50.25 / 49.75 split), so an export that takes the other one is not wrong there.
# Measured: the trained default has yes/no held-out answers at gaps 0.0052 and 0.0081, flipped by Q8_0 and
# Q4_0 GGUF, CoreML INT8 and GPTQ on one machine kind and kept on another; Q8_0's first-token logits differ
# from PyTorch's by up to 0.07. The earlier 5e-3 counted those flips as export errors.
TIE_EPS = 1e-2


@dataclass
class ParityPrompt:
    id: str
    image: Image.Image
    prompt: str


def synthetic_prompts(n: int, size: int, seed: int = 0) -> list[ParityPrompt]:
    """Random coloured shapes at the model's native size with simple questions (no resize anywhere)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        bg = tuple(rng.randint(0, 255) for _ in range(3))
        img = Image.new("RGB", (size, size), bg)
        d = ImageDraw.Draw(img)
        shapes = []
        for _ in range(rng.randint(1, 3)):
            c, s = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            x, y, r = rng.randint(8, size - 8), rng.randint(8, size - 8), rng.randint(5, size // 4)
            box = [x - r, y - r, x + r, y + r]
            if s == "circle":
                d.ellipse(box, fill=COLOURS[c])
            elif s == "square":
                d.rectangle(box, fill=COLOURS[c])
            else:
                d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=COLOURS[c])
            shapes.append((c, s))
        c, s = rng.choice(shapes)
        q = rng.choice(QUESTIONS).format(s=s, c=c)
        out.append(ParityPrompt(f"synth_{i:03d}", img, prompt_text(short_answer_prompt(q) if i % 2 else q)))
    return out


def heldout_prompts(path: str | Path, n: int) -> list[ParityPrompt]:
    """Prompts from the built-in world's held-out file (allava.evaluate's reader)."""
    from allava.evaluate import load_heldout

    items = load_heldout(path, limit=n)
    return [ParityPrompt(it.id, Image.open(it.image).convert("RGB"), prompt_text(it.question)) for it in items]


def _stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "rel_max": float(d.max() / max(1e-12, np.abs(a).max()))}


@dataclass
class Reference:
    """PyTorch results for one prompt, computed once and compared against any number of variants."""

    ids: list[int]
    text: str
    logits: np.ndarray  # teacher-forced on `ids`
    embd: np.ndarray


def reference_results(ref, prompts: list[ParityPrompt], n_tokens: int = 32, progress: bool = True) -> list[Reference]:
    out = []
    for p in tqdm(prompts, desc="reference", unit="prompt", disable=not progress):
        g = ref.generate(p.image, p.prompt, n_tokens)
        out.append(Reference(g.token_ids, g.text, ref.score(p.image, p.prompt, g.token_ids[:n_tokens]),
                             ref.image_embeddings(p.image)))
    return out


def run_parity(ref, cand, prompts: list[ParityPrompt], n_tokens: int = 32, tie_eps: float = TIE_EPS,
               progress: bool = True, refs: list[Reference] | None = None) -> dict[str, Any]:
    """Compare runtime `cand` to reference `ref` (both runtimes.base.Runtime) on `prompts`.

    Pass `refs` (from reference_results) to reuse PyTorch results across variants; `ref` may then be None.
    """
    if refs is None:
        refs = reference_results(ref, prompts, n_tokens, progress)
    rows = []
    for p, r in tqdm(list(zip(prompts, refs, strict=True)), desc="parity", unit="prompt", disable=not progress):
        c_gen = cand.generate(p.image, p.prompt, n_tokens)
        ids = r.ids[:n_tokens]
        r_log = r.logits
        c_log = cand.score(p.image, p.prompt, ids)
        top2 = np.sort(r_log, axis=-1)[:, -2:]
        gap = top2[:, 1] - top2[:, 0]
        decided = gap >= tie_eps
        agree = r_log.argmax(-1) == c_log.argmax(-1)
        prefix = 0
        for a, b in zip(r.ids, c_gen.token_ids, strict=False):
            if a != b:
                break
            prefix += 1
        emb = _stats(r.embd, cand.image_embeddings(p.image))
        exact = r.ids == c_gen.token_ids
        # diverged only where PyTorch itself was undecided (top-2 gap < tie_eps): a near-tie, not an error
        at_tie = not exact and prefix < len(gap) and bool(gap[prefix] < tie_eps)
        rows.append({
            "id": p.id,
            "greedy_exact": exact,
            "greedy_exact_or_tie": exact or at_tie,
            "greedy_prefix": prefix,
            "n_ref_tokens": len(r.ids),
            "tf_steps": int(decided.sum()),
            "tf_agree": int((agree & decided).sum()),
            "tf_all_agree": bool((agree | ~decided).all()),
            "skipped_ties": int((~decided).sum()),
            "first_logits": _stats(r_log[0], c_log[0]),
            "image_embd": emb,
            "ref_text": r.text,
            "cand_text": c_gen.text,
        })
    n = len(rows)
    steps = sum(r["tf_steps"] for r in rows)
    summary = {
        "n_prompts": n,
        "n_tokens": n_tokens,
        "tie_eps": tie_eps,
        "greedy_exact_rate": sum(r["greedy_exact"] for r in rows) / n,
        "greedy_exact_or_tie_rate": sum(r["greedy_exact_or_tie"] for r in rows) / n,
        "greedy_mean_prefix": float(np.mean([r["greedy_prefix"] / max(1, r["n_ref_tokens"]) for r in rows])),
        "tf_top1_agreement": sum(r["tf_agree"] for r in rows) / max(1, steps),
        "tf_prompt_pass_rate": sum(r["tf_all_agree"] for r in rows) / n,
        "tf_skipped_ties": sum(r["skipped_ties"] for r in rows),
        "first_logits_max_abs": max(r["first_logits"]["max_abs"] for r in rows),
        "first_logits_mean_abs": float(np.mean([r["first_logits"]["mean_abs"] for r in rows])),
        "image_embd_max_abs": max(r["image_embd"]["max_abs"] for r in rows),
        "image_embd_mean_abs": float(np.mean([r["image_embd"]["mean_abs"] for r in rows])),
        "image_embd_rel_max": max(r["image_embd"]["rel_max"] for r in rows),
    }
    return {"summary": summary, "prompts": rows}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One column per measured build/variant."""
    keys = [("n_prompts", "{:.0f}"), ("greedy_exact_rate", "{:.1%}"), ("greedy_exact_or_tie_rate", "{:.1%}"),
            ("greedy_mean_prefix", "{:.1%}"),
            ("tf_top1_agreement", "{:.2%}"), ("tf_prompt_pass_rate", "{:.1%}"), ("tf_skipped_ties", "{:.0f}"),
            ("first_logits_max_abs", "{:.2e}"), ("first_logits_mean_abs", "{:.2e}"),
            ("image_embd_max_abs", "{:.2e}"), ("image_embd_mean_abs", "{:.2e}"), ("image_embd_rel_max", "{:.2e}"),
            ("heldout_exact_match", "{:.1f}"), ("heldout_delta", "{:+.1f}"),
            ("heldout_delta_ci", "[{0[0]:+.1f}, {0[1]:+.1f}]"), ("heldout_same_count", "{:.0f}")]
    names = list(results)
    keys = [(k, f) for k, f in keys if any(results[n].get("summary", {}).get(k) is not None for n in names)
            or k in ("n_prompts",)]
    w = max(14, *(len(n) + 2 for n in names))
    lines = [f"{'metric':<24}" + "".join(f"{n:>{w}}" for n in names)]
    for k, fmt in keys:
        cells = []
        for n in names:
            v = results[n].get("summary", {}).get(k)
            cells.append(f"{fmt.format(v) if v is not None else results[n].get('error', '-')[:w - 2]:>{w}}")
        lines.append(f"{k:<24}" + "".join(cells))
    return "\n".join(lines)


def heldout_accuracy(runtime, items, max_new_tokens: int = 8, progress: bool = True) -> dict[str, Any]:
    """allava.evaluate's exact-match score for any runtime (greedy, single-turn prompt)."""
    from allava.evaluate import score

    preds = {}
    for it in tqdm(items, desc="held-out", unit="q", disable=not progress):
        img = Image.open(it.image).convert("RGB") if it.image else None
        preds[it.id] = runtime.generate(img, prompt_text(it.question), max_new_tokens).text.strip()
    return {**score(items, preds), "predictions": preds}


def same_answer_rate(a: dict[str, str], b: dict[str, str]) -> float:
    """Share of questions two runtimes answer identically (after allava.evaluate's normalisation)."""
    from allava.evaluate import normalize_answer

    return sum(normalize_answer(a[k]) == normalize_answer(b.get(k, "")) for k in a) / max(1, len(a))
