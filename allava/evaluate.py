"""Held-out exact match per question type: used by training and reused by ``bench/``.

Predictions come from greedy decoding with the chat template's single-turn prompt; answers are
compared after lower-casing and stripping surrounding space and a trailing full stop (the GQA rule).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from allava.chat import prompt_text
from allava.schema import IMAGE_MARKER, Record, load_records


@dataclass
class HeldoutItem:
    id: str
    image: Path | None
    question: str  # the user text, without the image marker
    answer: str
    qtype: str


def normalize_answer(text: str) -> str:
    return text.strip().lower().rstrip(".").strip()


def load_heldout(path: str | Path, image_root: str | Path | None = None, limit: int | None = None) -> list[HeldoutItem]:
    """Single-turn short-answer records with a ``qtype`` field (the built-in world writes these)."""
    path = Path(path)
    records, _ = load_records(path)
    root = Path(image_root) if image_root else path.parent
    items = [_to_item(r, root) for r in records]
    return items[:limit] if limit else items


def _to_item(r: Record, root: Path) -> HeldoutItem:
    question = r.conversations[0].value.replace(f"{IMAGE_MARKER}\n", "").replace(IMAGE_MARKER, "")
    return HeldoutItem(
        id=r.id,
        image=(root / r.image) if r.image else None,
        question=question,
        answer=r.conversations[1].value,
        qtype=str(r.extra.get("qtype", "all")),
    )


def score(items: Sequence[HeldoutItem], predictions: dict[str, str]) -> dict[str, object]:
    """Exact-match accuracy overall and per question type (percent)."""
    per_type: dict[str, list[int]] = defaultdict(list)
    for item in items:
        hit = int(normalize_answer(predictions.get(item.id, "")) == normalize_answer(item.answer))
        per_type[item.qtype].append(hit)
    all_hits = [h for hits in per_type.values() for h in hits]
    return {
        "exact_match": 100.0 * sum(all_hits) / max(1, len(all_hits)),
        "n": len(all_hits),
        "per_type": {k: {"exact_match": 100.0 * sum(v) / len(v), "n": len(v)} for k, v in sorted(per_type.items())},
    }


@torch.no_grad()
def predict_torch(
    model,
    processor,
    items: Sequence[HeldoutItem],
    max_new_tokens: int = 8,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, str]:
    """Greedy answers from a transformers LLaVA model, batched with left padding."""
    tokenizer = processor.tokenizer
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    model.eval()
    device = next(model.parameters()).device
    preds: dict[str, str] = {}
    try:
        for start in tqdm(range(0, len(items), batch_size), desc="eval: held-out", disable=not progress, leave=False):
            chunk = items[start : start + batch_size]
            with_image = [it for it in chunk if it.image is not None]
            without = [it for it in chunk if it.image is None]
            for group, has_image in ((with_image, True), (without, False)):
                if not group:
                    continue
                texts = [prompt_text(it.question, with_image=has_image) for it in group]
                images = [Image.open(it.image).convert("RGB") for it in group] if has_image else None
                inputs = processor(images=images, text=texts, return_tensors="pt", padding=True).to(device)
                out = model.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
                new = out[:, inputs["input_ids"].shape[1] :]
                for it, row in zip(group, new, strict=True):
                    preds[it.id] = tokenizer.decode(row, skip_special_tokens=True).strip()
    finally:
        tokenizer.padding_side = old_side
    return preds


def format_table(result: dict[str, object]) -> str:
    """The per-type table printed after training."""
    lines = [f"{'question type':<14} {'n':>5} {'exact match':>12}"]
    for qtype, row in result["per_type"].items():  # type: ignore[union-attr]
        lines.append(f"{qtype:<14} {row['n']:>5} {row['exact_match']:>11.1f}%")
    lines.append(f"{'all':<14} {result['n']:>5} {result['exact_match']:>11.1f}%")
    return "\n".join(lines)


PredictFn = Callable[[Sequence[HeldoutItem]], dict[str, str]]
