"""TouchStone: a text-only judge compares the model with GPT-4's answer, given the human image
description, in both orders; the model's score is the mean of its 1-10 scores * 100.

Official file: TSV with ``index, image, question, human_annotation, gpt4_ha_answer, category,
task_name``. Judging follows OFA-Sys TouchStone ``eval.py``: system prompt, template, temperature 0,
``stop=["\\n"]``, reply "<s1> <s2>"; an unparsable reply is an "error" round, left out of the means
(as ``compute_score`` does) and counted. Categories may be comma-separated lists.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from bench.benchmarks.base import (
    Item,
    JudgedAdapter,
    JudgeLike,
    ScoreResult,
    decode_b64_image,
    judge_name,
    read_tsv,
)
from bench.benchmarks.registry import register

SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
TEMPLATE = ("[Detailed Image Description]\n{human_annotation}\n\n[Question]\n{question}\n\n"
            "[The Start of Assistant 1's Answer]\n{answer_1}\n\n[The End of Assistant 1's Answer]\n\n"
            "[The Start of Assistant 2's Answer]\n{answer_2}\n\n[The End of Assistant 2's Answer]\n\n[System]\n{prompt}\n\n")
PROMPT = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user question "
    "and image description displayed above. AI assistants are provided with detailed image description and questions.\n"
    "Please rate the helpfulness, relevance, accuracy, comprehensiveness of their responses. Each assistant receives an "
    "overall score on a scale of 1 to 10, where a higher score indicates better overall performance.\nPlease first output "
    "a single line containing only two values indicating the scores for Assistant 1 and 2, respectively. The two scores "
    "are separated by a space. In the subsequent line, please provide a comprehensive explanation of your evaluation, "
    "avoiding any potential bias and ensuring that the order in which the responses were presented does not affect your "
    "judgment."
)


def mean100(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) * 100 if values else None


def process_reply(content: str) -> tuple[float, float] | None:
    """eval.py ``process_reply(content + '\\nok')``: first line must be exactly two numbers."""
    try:
        generated, _reason = (content + "\nok").strip().split("\n", 1)
        s1, s2 = generated.strip().split(" ")
        return float(s1), float(s2)
    except ValueError:
        return None


@register("touchstone")
class TouchStone(JudgedAdapter):
    description = "TouchStone, text-only judge, both orders, mean*100 per category"
    scorer = "TouchStone eval.py (both orders, mean*100)"

    def read(self, root: Path) -> list[Item]:
        path = self.data_file(root, "touchstone_20230831.tsv", glob="*.tsv")
        rows = read_tsv(path, self.name, ["index", "image", "question", "human_annotation", "gpt4_ha_answer", "category"])
        items = []
        for r in rows:
            image = decode_b64_image(r.get("image") or "")
            if image is None:
                self.skip("missing_image", f"index {r['index']}")
                continue
            items.append(Item(id=str(r["index"]), prompt=r["question"], image=image, stratum=r["category"],
                              meta={k: r.get(k, "") for k in ("question", "human_annotation", "gpt4_ha_answer",
                                                                 "category", "task_name")}))
        return items

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        model_scores: dict[str, list[float]] = defaultdict(list)
        ref_scores: list[float] = []
        counts = {"items": len(items), "missing_prediction": 0, "error_rounds": 0}
        for it in items:
            pred = predictions.get(it.id)
            counts["missing_prediction"] += pred is None
            m = it.meta
            rounds = [(m["gpt4_ha_answer"], pred or "", False), (pred or "", m["gpt4_ha_answer"], True)]
            for a1, a2, model_first in rounds:
                query = TEMPLATE.format(human_annotation=m["human_annotation"], question=m["question"],
                                        answer_1=a1, answer_2=a2, prompt=PROMPT)
                try:
                    reply = judge.ask(query, system=SYSTEM, temperature=0.0, stop=["\n"], tag=f"touchstone:{it.id}")
                    parsed = process_reply(reply)
                except RuntimeError:
                    parsed = None
                if parsed is None:
                    counts["error_rounds"] += 1
                    continue
                mine, ref = (parsed[0], parsed[1]) if model_first else (parsed[1], parsed[0])
                ref_scores.append(ref)
                model_scores["__all__"].append(mine)
                for cat in m["category"].split(","):
                    model_scores[cat].append(mine)
        allv = model_scores.pop("__all__", [])
        return self.result(mean100(allv), breakdown={k: mean100(v) for k, v in sorted(model_scores.items())},
                           scorer=self.scorer, judge=judge_name(judge), counts=counts,
                           details={"reference_gpt4_ha_score": mean100(ref_scores)})
