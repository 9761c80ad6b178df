"""Small look-alikes of ALLaVA-3B's training data, in each release's own format and folder layout.

Tests and the dry run need the recipe's files without downloading ~250 GB, so this writes every
source of ``train/data_catalog.py`` at ``scale`` x its published record count (at least one
record each): the same file names, the same record fields (ALLaVA-4V's ``original_caption``/``url``,
Evol-Instruct's ``idx``, OpenChat's ``items``/``model``, LLaVA-1.5's text-only records with
``"model": ""``), and images under the same folders (``allava_laion/images``,
``allava_vflan/images/images_191task_1k``, ``coco/train2017``, ``sam/images``, ``gqa/images``...).
The mix of image folders inside ShareGPT4V's file is illustrative; LLaVA-1.5's follows its
published composition. Images are one tiny JPEG written under every name (the dry run only checks
that they exist; training decodes them, and any JPEG does).

``damage`` adds the failures the tests check: ``missing_image`` (an OCR-VQA record of the LLaVA mix
whose file is absent, as in the real release), ``malformed`` (a ShareGPT4V record without
``conversations``).
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterable
from pathlib import Path

from train.data_catalog import ANNOTATIONS

# LLaVA-1.5's mix by image folder (the LLaVA maintainers' count of llava_v1_5_mix665k.json)
LLAVA_MIX = {"coco/train2017": 364_100, "vg/VG_100K": 43_000, "vg/VG_100K_2": 43_417, "gqa/images": 72_140,
             "ocr_vqa/images": 80_000, "textvqa/train_images": 21_953, None: 40_688}
SHAREGPT4V = {"coco/train2017": 0.5, "sam/images": 0.2, "llava/llava_pretrain/images/00000": 0.2,
              "wikiart/images": 0.025, "share_textvqa/images": 0.025, "web-celebrity/images": 0.025,
              "web-landmark/images": 0.025}
WORDS = ("the", "image", "shows", "a", "small", "red", "cube", "next", "to", "blue", "sphere", "on", "wooden",
         "table", "while", "light", "falls", "from", "left", "and", "window", "frames", "garden", "with", "trees",
         "path", "that", "leads", "an", "old", "stone", "wall")


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out).capitalize() + "."


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _pick(shares: dict, n: int) -> list:
    """``n`` folder keys in proportion to ``shares`` (largest remainders), in a fixed order."""
    total = sum(shares.values())
    exact = {k: n * v / total for k, v in shares.items()}
    counts = {k: int(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    return [k for k in shares for _ in range(counts[k])]


class _Writer:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.jpeg = _jpeg()
        self.images: set[str] = set()

    def image(self, rel: str) -> str:
        if rel not in self.images:
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.jpeg)
            self.images.add(rel)
        return rel

    def dump(self, rel: str, records: list[dict]) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    def turns(self, pairs: Iterable[tuple[int, int]], image_first: bool | None) -> list[dict]:
        """Alternating human/gpt turns; the first question carries <image> (before or after the text)."""
        out = []
        for k, (q, a) in enumerate(pairs):
            question = _text(self.rng, q) + "?"
            if k == 0 and image_first is not None:
                question = f"<image>\n{question}" if image_first else f"{question}\n<image>"
            out += [{"from": "human", "value": question}, {"from": "gpt", "value": _text(self.rng, a)}]
        return out


def _allava(w: _Writer, rel: str, n: int) -> list[dict]:
    kind = "cap" if "Caption" in rel else "inst"
    if "LAION" in rel:
        recs = []
        for i in range(n):
            img = w.image(f"allava_laion/images/{100_000_000 + i}.jpeg")
            recs.append({"id": f"allava_laion_{kind}_{100_000_000 + i}", "image": img,
                         "conversations": w.turns([(60, 900 if kind == "cap" else 700)], True),
                         "original_caption": _text(w.rng, 40), "url": f"https://example.com/{i}.jpg"})
        return recs
    return [{"id": f"allava_vflan_{kind}_{i}",
             "image": w.image(f"allava_vflan/images/images_191task_1k/VQA-E+task_{i % 7}_{i}.jpg"),
             "conversations": w.turns([(120, 800 if kind == "cap" else 600)], True)} for i in range(n)]


def _evol(w: _Writer, n: int) -> list[dict]:
    return [{"idx": f"evol{i:07d}", "conversations": w.turns([(500, 2000)], None)} for i in range(n)]


def _openchat(w: _Writer, n: int) -> list[dict]:
    return [{"items": w.turns([(300, 1500)] * (1 + i % 3), None), "model": "Model: GPT-4",
             "id": f"sg{i:05d}", "title": _text(w.rng, 20), "views": 10 + i, "hash": [i * 7919, 2 * (1 + i % 3)]}
            for i in range(n)]


def _sharegpt4v(w: _Writer, n: int) -> list[dict]:
    recs = []
    for i, folder in enumerate(_pick(SHAREGPT4V, n)):
        name = f"sa_{i}.jpg" if folder.startswith("sam") else f"{i:012d}.jpg"
        recs.append({"id": f"sharegpt4v_{i}", "image": w.image(f"{folder}/{name}"),
                     "conversations": w.turns([(50, 1100)], i % 2 == 0)})
    return recs


def _llava_mix(w: _Writer, n: int) -> list[dict]:
    recs = []
    for i, folder in enumerate(_pick(LLAVA_MIX, n)):
        if folder is None:  # LLaVA-1.5's ShareGPT part: text only, "model": ""
            recs.append({"id": f"mix{i:06d}_0", "model": "", "conversations": w.turns([(200, 800)] * 2, None)})
            continue
        recs.append({"id": f"{i:012d}", "image": w.image(f"{folder}/{i:012d}.jpg"),
                     "conversations": w.turns([(40, 30)] * (1 + i % 4), i % 3 != 0)})
    return recs


def write_recipe_fixture(root: str | Path, scale: float = 1e-3, seed: int = 0,
                         damage: Iterable[str] = ()) -> dict[str, int]:
    """Write every catalog source under ``root``; returns the record count written per source path."""
    root = Path(root)
    w = _Writer(root, seed)
    counts: dict[str, int] = {}
    for entry in ANNOTATIONS:
        n = max(1, round(entry.records * scale))
        if entry.format == "allava":
            recs = _evol(w, n) if "Evol" in entry.path else _allava(w, entry.path, n)
        elif entry.format == "openchat":
            recs = _openchat(w, n)
        elif entry.format == "sharegpt4v":
            recs = _sharegpt4v(w, n)
        else:
            recs = _llava_mix(w, n)
        if "malformed" in damage and entry.format == "sharegpt4v":
            recs.append({"id": "sharegpt4v_broken", "image": recs[0]["image"]})  # no conversations
        if "missing_image" in damage and entry.format == "llava_mix":
            recs.append({"id": "ocr_missing", "image": "ocr_vqa/images/0000000000.jpg",
                         "conversations": w.turns([(40, 30)], True)})
        w.dump(entry.path, recs)
        counts[entry.path] = len(recs)
    return counts
