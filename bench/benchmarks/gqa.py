"""GQA (testdev-balanced): exact match after LLaVA's ``convert_gqa_for_eval.py`` (trailing '.'
stripped, lower-cased), as the official GQA ``eval.py`` compares. Breakdown by structural type.

Official file: ``testdev_balanced_questions.json`` = ``{qid: {imageId, question, answer, types}}``;
images ``images/<imageId>.jpg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from allava.chat import short_answer_prompt
from bench.benchmarks.base import Adapter, Item, JudgeLike, ScoreResult
from bench.benchmarks.registry import register


def gqa_match(prediction: str, answer: str) -> bool:
    return prediction.strip().rstrip(".").lower() == answer


@register("gqa")
class GQA(Adapter):
    description = "GQA testdev-balanced, exact match"

    def read(self, root: Path) -> list[Item]:
        base, data = self.read_json_file(root, "testdev_balanced_questions.json",
                                         "must map question ids to question objects")
        items = []
        for qid, q in self.complete_rows(data.items(), ("imageId", "question", "answer"), label="question {key!r}"):
            image = self.find_image([base / "images" / f"{q['imageId']}.jpg", base / "images" / f"{q['imageId']}.png"],
                                    str(q["imageId"]))
            if image is None:
                continue
            structural = (q.get("types") or {}).get("structural", "")
            items.append(Item(id=str(qid), prompt=short_answer_prompt(q["question"]), image=image,
                              meta={"answer": q["answer"], "structural": structural}, stratum=structural))
        return items

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        per, missing = self.tally(items, predictions,
                                  lambda it, pred: (it.meta["structural"] or "all", gqa_match(pred, it.meta["answer"])))
        return self.accuracy_result(per, scorer="GQA exact match",
                                    counts={"items": len(items), "missing_prediction": missing})
