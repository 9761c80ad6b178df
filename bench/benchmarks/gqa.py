"""GQA (testdev-balanced): exact match after LLaVA's ``convert_gqa_for_eval.py`` (trailing '.'
stripped, lower-cased), as the official GQA ``eval.py`` compares. Breakdown by structural type.

Official file: ``testdev_balanced_questions.json`` = ``{qid: {imageId, question, answer, types}}``;
images ``images/<imageId>.jpg``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from allava.chat import short_answer_prompt
from bench.benchmarks.base import Adapter, Item, JudgeLike, ScoreResult, blank_missing, write_json_file
from bench.benchmarks.registry import register


def gqa_prediction(prediction: str) -> str:
    """convert_gqa_for_eval.py: ``text.rstrip('.').lower()`` (LLaVA's answers are stripped when generated)."""
    return prediction.strip().rstrip(".").lower()


def gqa_match(prediction: str, answer: str) -> bool:
    return gqa_prediction(prediction) == answer


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
                              meta={"answer": q["answer"], "structural": structural, "record": q}, stratum=structural))
        return items

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """``<model>.json``, the predictions file GQA's ``eval.py`` reads (``--predictions``): a list of
        ``{"questionId", "prediction"}`` as LLaVA's ``convert_gqa_for_eval.py`` writes it; and
        ``testdev_balanced_questions.json`` holding the questions scored (eval.py stops unless every
        balanced question of its questions file has a prediction)."""
        preds = blank_missing(items, predictions)
        return [write_json_file(out / f"{model_id}.json",
                                [{"questionId": it.id, "prediction": gqa_prediction(preds[it.id])} for it in items]),
                write_json_file(out / "testdev_balanced_questions.json", {it.id: it.meta["record"] for it in items})]

    def item_scores(self, items: Sequence[Item], predictions: dict[str, str]) -> dict[str, float]:
        """1/0 per item by :meth:`score`'s rule (the headline is their mean x 100), for the paired bootstrap."""
        return {it.id: float(gqa_match(predictions.get(it.id) or "", it.meta["answer"])) for it in items}

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        per, missing = self.tally(items, predictions,
                                  lambda it, pred: (it.meta["structural"] or "all", gqa_match(pred, it.meta["answer"])))
        return self.accuracy_result(per, scorer="GQA exact match",
                                    counts={"items": len(items), "missing_prediction": missing})
