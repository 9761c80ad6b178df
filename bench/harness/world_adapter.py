"""The built-in world's held-out set as a benchmark adapter ("world"): the bench's default benchmark.

Why here and through the shared registry: it is the one benchmark that always exists offline (the
world is generated, not downloaded), and registering it like the 12 report benchmarks means the
runner has no special case. Loading and scoring reuse allava/evaluate.py so the bench's number is
the same exact-match-per-question-type that training prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.benchmarks.base import Adapter, DataFormatError, Item, JudgeLike, ScoreResult
from bench.benchmarks.registry import _REGISTRY, register

HELDOUT_FILE = "ALLaVA-Heldout-World.json"


class WorldHeldout(Adapter):
    description = "built-in world held-out questions, exact match per question type (allava/evaluate.py)"

    def read(self, root: Path) -> list[Item]:
        from allava.evaluate import load_heldout

        path = root if root.is_file() else root / HELDOUT_FILE
        if not path.is_file():
            raise DataFormatError(f"world: {path} is missing (python train/run.py builds the world under outputs/world)")
        try:
            held = load_heldout(path)
        except (ValueError, KeyError, IndexError) as exc:
            raise DataFormatError(f"world: {path} is not an ALLaVA held-out file ({exc})") from exc
        items = []
        for h in held:
            if h.image is not None and not h.image.is_file():
                self.skip("missing_image", str(h.image))
                continue
            items.append(Item(id=h.id, prompt=h.question, image=h.image, meta={"answer": h.answer, "qtype": h.qtype},
                              stratum=h.qtype))
        return items

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        from allava.evaluate import HeldoutItem, score

        held = [HeldoutItem(it.id, None, it.prompt, it.meta["answer"], it.meta["qtype"]) for it in items]
        res = score(held, predictions)
        missing = sum(it.id not in predictions for it in items)
        return self.result(res["exact_match"] if items else None,
                           breakdown={k: v["exact_match"] for k, v in res["per_type"].items()},
                           scorer="exact match after lower-casing and stripping a trailing '.' (allava/evaluate.py)",
                           counts={"items": len(items), "missing_prediction": missing})

    def item_scores(self, items: Sequence[Item], predictions: dict[str, str]) -> dict[str, float]:
        """1/0 per item, by the rule :meth:`score` applies: the headline is their mean x 100, which lets the
        paired bootstrap (bench/harness/confidence.py) resample hundreds of items thousands of times in
        numpy instead of calling :meth:`score` per resample (it checks the mean against the headline)."""
        from allava.evaluate import normalize_answer

        return {it.id: float(normalize_answer(predictions.get(it.id, "")) == normalize_answer(it.meta["answer"]))
                for it in items}


if "world" not in _REGISTRY:  # importing twice (tests, reloads) must not double-register
    register("world")(WorldHeldout)
