"""LLaVA-Bench (In-the-Wild): a judge scores the GPT-4 reference (assistant 1) and the model
(assistant 2) from 1 to 10; relative score = mean(model) / mean(reference) x 100.

Official files: ``questions.jsonl`` (question_id, image, text, category), ``context.jsonl``
(image, caption), ``answers_gpt4.jsonl`` (question_id, text), ``images/``. Judging follows
haotian-liu/LLaVA @ c121f04 ``llava/eval/eval_gpt_review_bench.py``: rule ``llava_bench_<category>``
from ``llava/eval/table/rule.json``, the content layout below, system prompt, temperature 0.2,
max_tokens 1024; ``parse_score``: the first line of the review, commas replaced by spaces, split on
single spaces, must give exactly two parts that ``float`` reads, otherwise the pair is [-1, -1] --
and ``summarize_gpt_review.py`` still averages that pair in. Summary (``summarize_gpt_review.py``):
per ``llava_bench_<category>`` and ``all``, the column means rounded to 3 decimals, then
round(model / reference x 100, 1), the reference x 10 and the model x 10 (each rounded to 1).
The official script asks the judge again forever when the API fails; a judge that stays down here
is counted (``judge_errors``) and its question left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.benchmarks.base import (
    Item,
    JudgedAdapter,
    JudgeLike,
    Judgments,
    ScoreResult,
    blank_missing,
    judge_name,
    read_jsonl,
    stable_id,
    write_jsonl,
)
from bench.benchmarks.registry import register

# Byte for byte from haotian-liu/LLaVA @ c121f04: SYSTEM from llava/eval/eval_gpt_review_bench.py
# get_eval; RULE from llava/eval/table/rule.json (the same prompt for llava_bench_conv, _detail and
# _complex, role "Assistant").
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
ROLE = "Assistant"
PROMPT_VERSION = "llava eval_gpt_review_bench + rule.json llava_bench_* (@c121f04)"
REFERENCE_MODEL = "gpt4"


def review_content(caption: str, question: str, reference: str, answer: str, role: str = ROLE,
                   rule: str = RULE) -> str:
    """eval_gpt_review_bench.py: the user message (context, question, both answers, the rule)."""
    return (f"[Context]\n{caption}\n\n[Question]\n{question}\n\n"
            f"[{role} 1]\n{reference}\n\n[End of {role} 1]\n\n[{role} 2]\n{answer}\n\n[End of {role} 2]\n\n"
            f"[System]\n{rule}\n\n")


def parse_score(review: str) -> list[float]:
    """eval_gpt_review_bench.py ``parse_score``: [s1, s2], or [-1, -1] when the first line is not
    exactly two single-space-separated numbers (after commas become spaces)."""
    try:
        parts = review.split("\n")[0].replace(",", " ").split(" ")
        if len(parts) == 2:
            return [float(parts[0]), float(parts[1])]
        return [-1, -1]
    except ValueError:
        return [-1, -1]


def summarize(tuples: Sequence[Sequence[float]]) -> tuple[float, float, float] | None:
    """summarize_gpt_review.py for one key: (relative score, reference x 10, model x 10), each as the
    script prints them; None when there is nothing to average or the reference mean is 0 (the
    script would divide by zero)."""
    if not tuples:
        return None
    import numpy as np  # the script's np.asarray(v).mean(0): same summation order, same floats

    stats = [round(x, 3) for x in np.asarray(tuples, dtype=float).mean(0).tolist()]
    if stats[0] == 0:
        return None
    return round(stats[1] / stats[0] * 100, 1), round(stats[0] * 10, 1), round(stats[1] * 10, 1)


def relative_score(tuples: Sequence[Sequence[float]]) -> float | None:
    s = summarize(tuples)
    return None if s is None else s[0]


@register("llava_bench")
class LLaVABench(JudgedAdapter):
    description = "LLaVA-Bench (In-the-Wild), relative score vs GPT-4 answers"
    scorer = "LLaVA eval_gpt_review_bench + summarize_gpt_review (relative score, [-1, -1] averaged in)"
    prompt_version = PROMPT_VERSION

    def read(self, root: Path) -> list[Item]:
        questions = read_jsonl(root / "questions.jsonl", "llava_bench")
        contexts = {c.get("image"): c for c in read_jsonl(root / "context.jsonl", "llava_bench")}
        refs = {str(a.get("question_id")): a for a in read_jsonl(root / "answers_gpt4.jsonl", "llava_bench")}
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
                                    "reference": refs[qid].get("text", ""), "question_row": q,
                                    "reference_row": refs[qid]}))
        return items

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        log = Judgments(self.name, judge, self.prompt_version, {"system": SYSTEM, "rule": RULE, "role": ROLE})
        scores: dict[str, list[list[float]]] = defaultdict(list)  # summarize_gpt_review's keys
        counts = {"items": len(items), "missing_prediction": 0, "unparsable_scored_-1": 0}
        for it in items:
            pred = predictions.get(it.id)
            counts["missing_prediction"] += pred is None
            content = review_content(it.meta["caption"], it.meta["question"], it.meta["reference"], pred or "")
            review = log.ask(it.id, content, system=SYSTEM, temperature=0.2, max_tokens=1024)
            if review is None:
                continue
            pair = parse_score(review)
            counts["unparsable_scored_-1"] += pair == [-1, -1]
            log.note(tuple=pair, category=f"llava_bench_{it.meta['category']}")
            scores[f"llava_bench_{it.meta['category']}"].append(pair)
            scores["all"].append(pair)
        counts.update(judge_errors=log.errors, requests=len(log.records), reasks=0)  # the review is never re-asked
        summary = {k: summarize(v) for k, v in sorted(scores.items())}
        breakdown = {k.removeprefix("llava_bench_"): (v[0] if v else None) for k, v in summary.items() if k != "all"}
        overall = summary.get("all")
        if overall is not None:
            breakdown["reference_score_x10"], breakdown["model_score_x10"] = overall[1], overall[2]
        return self.result(overall[0] if overall else None, breakdown=breakdown, scorer=self.scorer,
                           judge=judge_name(judge), counts=counts, prompt_version=self.prompt_version,
                           details={**log.details(), "summary": summary})

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """The files ``eval_gpt_review_bench.py`` zips line by line -- ``questions.jsonl``,
        ``answers_gpt4.jsonl`` and ``answers/<model>.jsonl`` (``model_vqa.py`` rows: question_id,
        prompt, text, answer_id, model_id, metadata) for the questions answered, in question order --
        and with a judge ``reviews/<model>.jsonl`` in its output format, which
        ``summarize_gpt_review.py -f`` summarizes."""
        answered, predictions = list(items), blank_missing(items, predictions)
        written = [
            write_jsonl(out / "questions.jsonl", [it.meta["question_row"] for it in answered]),
            write_jsonl(out / "answers_gpt4.jsonl", [it.meta["reference_row"] for it in answered]),
            write_jsonl(out / "answers" / f"{model_id}.jsonl", [
                {"question_id": it.meta["question_row"]["question_id"], "prompt": it.meta["question"],
                 "text": predictions[it.id], "answer_id": stable_id(model_id, it.id), "model_id": model_id,
                 "metadata": {}} for it in answered])]
        if judged and judged.get("judgments"):
            reviews = {r["id"]: r for r in judged["judgments"] if r.get("reply") is not None}
            rows = []
            for it in answered:
                r = reviews.get(it.id)
                if r is None:
                    continue
                ref = it.meta["reference_row"]
                rows.append({"id": len(rows) + 1, "question_id": it.meta["question_row"]["question_id"],
                             "answer1_id": ref.get("answer_id", ref["question_id"]),
                             "answer2_id": stable_id(model_id, it.id), "category": r["category"],
                             "content": r["reply"], "tuple": r["tuple"]})
            written.append(write_jsonl(out / "reviews" / f"{model_id}.jsonl", rows))
        return written
