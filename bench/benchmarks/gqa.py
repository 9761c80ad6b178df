"""GQA (testdev-balanced): exact match after LLaVA's ``convert_gqa_for_eval.py`` (trailing '.'
stripped, lower-cased), as the official GQA ``eval.py`` compares. Breakdown by structural type.

Official file: ``testdev_balanced_questions.json`` = ``{qid: {imageId, question, answer, types}}``;
images ``images/<imageId>.jpg``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from allava.chat import short_answer_prompt
from bench.benchmarks.base import Adapter, DataFormatError, Item, JudgeLike, ScoreResult, find_file, pct, read_json
from bench.benchmarks.registry import register


def gqa_match(prediction: str, answer: str) -> bool:
    return prediction.strip().rstrip(".").lower() == answer


@register("gqa")
class GQA(Adapter):
    description = "GQA testdev-balanced, exact match"

    def read(self, root: Path) -> list[Item]:
        path = root if root.is_file() else root / "testdev_balanced_questions.json"
        base = path.parent
        data = read_json(path, "gqa")
        if not isinstance(data, dict):
            raise DataFormatError(f"gqa: {path} must map question ids to question objects")
        items = []
        for qid, q in data.items():
            if not isinstance(q, dict) or not {"imageId", "question", "answer"} <= q.keys():
                self.skip("bad_row", f"question {qid!r} lacks imageId/question/answer")
                continue
            image = find_file([base / "images" / f"{q['imageId']}.jpg", base / "images" / f"{q['imageId']}.png"])
            if image is None:
                self.skip("missing_image", str(q["imageId"]))
                continue
            structural = (q.get("types") or {}).get("structural", "")
            items.append(Item(id=str(qid), prompt=short_answer_prompt(q["question"]), image=image,
                              meta={"answer": q["answer"], "structural": structural}, stratum=structural))
        return items

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        per: dict[str, list[bool]] = defaultdict(list)
        missing = 0
        for it in items:
            pred = predictions.get(it.id)
            missing += pred is None
            per[it.meta["structural"] or "all"].append(gqa_match(pred or "", it.meta["answer"]))
        total = [ok for v in per.values() for ok in v]
        return self.result(pct(sum(total), len(total)), breakdown={k: pct(sum(v), len(v)) for k, v in sorted(per.items())},
                           scorer="GQA exact match", counts={"items": len(items), "missing_prediction": missing})
