"""SEED-Bench (image, v1): multiple choice, accuracy per evaluation dimension.

Official file: ``SEED-Bench.json`` = ``{"questions": [{question_id, question, choice_a..choice_d,
answer, question_type_id, data_id, data_type}], "question_type": {name: id}}``; images under
``SEED-Bench-image/<data_id>``. Only ``data_type == "image"`` questions are used (video ones are
counted and skipped). Rule as LLaVA's ``scripts/convert_seed_for_submission.py``: the (stripped)
generated text must equal the answer letter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from allava.chat import multiple_choice_prompt
from bench.benchmarks.base import Adapter, DataFormatError, Item, JudgeLike, ScoreResult, find_file, pct, read_json
from bench.benchmarks.registry import register


@register("seed")
class SEED(Adapter):
    description = "SEED-Bench image questions, accuracy per dimension"

    def read(self, root: Path) -> list[Item]:
        path = root if root.is_file() else root / "SEED-Bench.json"
        base = path.parent
        data = read_json(path, "seed")
        if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
            raise DataFormatError(f"seed: {path} must be an object with a 'questions' list")
        names = {int(v): k for k, v in (data.get("question_type") or {}).items()}
        items = []
        for q in data["questions"]:
            if q.get("data_type", "image") != "image":
                self.skip("video_question", str(q.get("question_id")))
                continue
            try:
                choices = [q[f"choice_{c}"] for c in "abcd"]
                qid, answer, dim = str(q["question_id"]), q["answer"], int(q["question_type_id"])
            except (KeyError, TypeError, ValueError):
                self.skip("bad_row", f"question {q.get('question_id')!r} lacks SEED fields")
                continue
            image = find_file([base / "SEED-Bench-image" / str(q.get("data_id")), base / "images" / str(q.get("data_id")),
                               base / str(q.get("data_id"))])
            if image is None:
                self.skip("missing_image", str(q.get("data_id")))
                continue
            dim_name = names.get(dim, str(dim))
            items.append(Item(id=qid, prompt=multiple_choice_prompt(q["question"], choices), image=image,
                              meta={"answer": answer, "dimension": dim_name}, stratum=dim_name))
        return items

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        per: dict[str, list[bool]] = defaultdict(list)
        missing = 0
        for it in items:
            pred = predictions.get(it.id)
            missing += pred is None
            per[it.meta["dimension"]].append((pred or "").strip() == it.meta["answer"])
        total = [ok for v in per.values() for ok in v]
        return self.result(pct(sum(total), len(total)), breakdown={k: pct(sum(v), len(v)) for k, v in sorted(per.items())},
                           scorer="letter exact match (LLaVA convert_seed_for_submission)",
                           counts={"items": len(items), "missing_prediction": missing})
