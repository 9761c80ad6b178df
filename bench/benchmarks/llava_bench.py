"""LLaVA-Bench (In-the-Wild): judge scores reference (GPT-4) and model answers 1-10.

Official files: ``questions.jsonl`` (question_id, image, text, category), ``context.jsonl``
(image, caption), ``answers_gpt4.jsonl`` (question_id, text), ``images/``. Judging follows LLaVA's
``eval_gpt_review_bench.py`` (rule ``llava_bench_<category>``, reference as assistant 1, model as
assistant 2, temperature 0.2) and ``summarize_gpt_review.py``: relative score =
mean(model) / mean(reference) * 100 per category and overall. An unparsable first line gives the
official ``[-1, -1]`` tuple, which the official summary averages in; we do the same and count it.
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
    judge_name,
    parse_first_two_floats,
    read_jsonl,
)
from bench.benchmarks.registry import register

SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
RULE = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user question "
    "displayed above. The user asks the question on observing an image. For your reference, the visual content in the "
    "image is represented with a few sentences describing the image. \nPlease rate the helpfulness, relevance, accuracy, "
    "level of details of their responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher "
    "score indicates better overall performance.\nPlease first output a single line containing only two values "
    "indicating the scores for Assistant 1 and 2, respectively. The two scores are separated by a space.\nIn the "
    "subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any potential bias and "
    "ensuring that the order in which the responses were presented does not affect your judgment."
)


def review_content(caption: str, question: str, reference: str, answer: str) -> str:
    role = "Assistant"
    return (f"[Context]\n{caption}\n\n[Question]\n{question}\n\n"
            f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
            f"[System]\n{RULE}\n\n")


def parse_score(review: str) -> tuple[float, float] | None:
    return parse_first_two_floats(review.split("\n")[0])


def relative_score(tuples: Sequence[tuple[float, float]]) -> float | None:
    if not tuples:
        return None
    ref = sum(t[0] for t in tuples) / len(tuples)
    model = sum(t[1] for t in tuples) / len(tuples)
    return None if ref == 0 else model / ref * 100


@register("llava_bench")
class LLaVABench(JudgedAdapter):
    description = "LLaVA-Bench (In-the-Wild), relative score vs GPT-4 answers"
    scorer = "LLaVA eval_gpt_review_bench + summarize_gpt_review (relative score)"

    def read(self, root: Path) -> list[Item]:
        questions = read_jsonl(root / "questions.jsonl", "llava_bench")
        contexts = {c.get("image"): c for c in read_jsonl(root / "context.jsonl", "llava_bench")}
        refs = {str(a.get("question_id")): a.get("text", "") for a in read_jsonl(root / "answers_gpt4.jsonl", "llava_bench")}
        items = []
        for q in questions:
            qid = str(q.get("question_id"))
            if not {"image", "text", "category"} <= q.keys() or qid not in refs or q["image"] not in contexts:
                self.skip("bad_row", f"question {qid}: needs image/text/category, a context and a GPT-4 answer")
                continue
            image = self.find_image([root / "images" / q["image"], root / q["image"]], q["image"])
            if image is None:
                continue
            cap = contexts[q["image"]].get("caption", "")
            cap = "\n".join(cap) if isinstance(cap, list) else str(cap)
            items.append(Item(id=qid, prompt=q["text"], image=image, stratum=q["category"],
                              meta={"category": q["category"], "question": q["text"], "caption": cap,
                                    "reference": refs[qid]}))
        return items

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        per: dict[str, list[tuple[float, float]]] = defaultdict(list)
        counts = {"items": len(items), "missing_prediction": 0, "unparsable": 0, "judge_errors": 0}
        for it in items:
            pred = predictions.get(it.id)
            counts["missing_prediction"] += pred is None
            content = review_content(it.meta["caption"], it.meta["question"], it.meta["reference"], pred or "")
            try:
                review = judge.ask(content, system=SYSTEM, temperature=0.2, max_tokens=1024, tag=f"llava_bench:{it.id}")
            except RuntimeError:
                counts["judge_errors"] += 1
                continue
            pair = parse_score(review)
            if pair is None:
                counts["unparsable"] += 1
                pair = (-1.0, -1.0)
            per[it.meta["category"]].append(pair)
        everything = [t for v in per.values() for t in v]
        breakdown = {k: relative_score(v) for k, v in sorted(per.items())}
        return self.result(relative_score(everything), breakdown=breakdown, scorer=self.scorer, judge=judge_name(judge),
                           counts=counts)
