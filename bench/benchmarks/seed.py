"""SEED-Bench (image, v1): multiple choice, accuracy per evaluation dimension.

Official file: ``SEED-Bench.json`` = ``{"questions": [{question_id, question, choice_a..choice_d,
answer, question_type_id, data_id, data_type}], "question_type": {name: id}}``; images under
``SEED-Bench-image/<data_id>``. Only ``data_type == "image"`` questions are used (video ones are
counted and skipped). Rule as LLaVA's ``scripts/convert_seed_for_submission.py``: the (stripped)
generated text must equal the answer letter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from allava.chat import multiple_choice_prompt
from bench.benchmarks.base import Adapter, Item, JudgeLike, ScoreResult, blank_missing, write_jsonl
from bench.benchmarks.registry import register


@register("seed")
class SEED(Adapter):
    description = "SEED-Bench image questions, accuracy per dimension"

    def read(self, root: Path) -> list[Item]:
        base, data = self.read_json_file(root, "SEED-Bench.json", list_key="questions")
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
            data_id = str(q.get("data_id"))
            image = self.find_image([base / "SEED-Bench-image" / data_id, base / "images" / data_id, base / data_id],
                                    data_id)
            if image is None:
                continue
            dim_name = names.get(dim, str(dim))
            items.append(Item(id=qid, prompt=multiple_choice_prompt(q["question"], choices), image=image,
                              meta={"answer": answer, "dimension": dim_name, "question_id": q["question_id"]},
                              stratum=dim_name))
        return items

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """``<model>.jsonl``, the SEED-Bench leaderboard upload LLaVA's ``convert_seed_for_submission.py``
        writes: one ``{"question_id", "prediction"}`` row per question (its raw answer), in file order."""
        preds = blank_missing(items, predictions)
        return [write_jsonl(out / f"{model_id}.jsonl",
                            [{"question_id": it.meta["question_id"], "prediction": preds[it.id]} for it in items])]

    def item_scores(self, items: Sequence[Item], predictions: dict[str, str]) -> dict[str, float]:
        """1/0 per item by :meth:`score`'s rule (the headline is their mean x 100), for the paired bootstrap."""
        return {it.id: float((predictions.get(it.id) or "").strip() == it.meta["answer"]) for it in items}

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        per, missing = self.tally(items, predictions,
                                  lambda it, pred: (it.meta["dimension"], pred.strip() == it.meta["answer"]))
        return self.accuracy_result(per, scorer="letter exact match (LLaVA convert_seed_for_submission)",
                                    counts={"items": len(items), "missing_prediction": missing})
