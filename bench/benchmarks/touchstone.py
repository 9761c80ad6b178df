"""TouchStone: a text-only judge compares the model with GPT-4's answer, given the human image
description, in both orders; the model's score is the mean of its 1-10 scores x 100.

Official file: TSV with ``index, image, question, human_annotation, gpt4_ha_answer, category,
task_name``. Judging and scoring follow OFA-Sys/TouchStone @ 3d85f92 ``eval.py``:
* ``process``: round 1 shows GPT-4's answer as assistant 1 and the model's as assistant 2, round 2
  the other way round; the submit file is read with ``pandas.read_csv(sep="\t")``, so a cell that
  pandas reads as missing ("", "NA", "None", "nan", "null", ...) reaches the prompt as "nan" -- we
  format the same text (``pandas_cell``).
* ``evaluate``: system prompt, temperature 0, ``stop=["\n"]``; the reply + "\nok" goes through
  ``process_reply`` (first line split on single spaces into exactly two floats); a reply it cannot
  read (or a failed request) is requested again, up to ``MAX_API_RETRY = 5`` requests, after which
  the round is (0, 0, "error").
* ``compute_score``: rounds whose reason is "error" are left out; the model's score is the mean
  over both rounds of its own scores x 100, per category too (categories split on ","). GPT-4's
  ("gpt4-ha") score is in the details.
Every request beyond the first of a round is counted as a re-ask.
"""

from __future__ import annotations

import csv
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
    decode_b64_image,
    judge_name,
    read_tsv,
    write_jsonl,
)
from bench.benchmarks.registry import register

# Byte for byte from OFA-Sys/TouchStone eval.py @ 3d85f92 (prompt_dic: system_prompt,
# prompt_template, defaults.prompt).
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
PROMPT_VERSION = "touchstone eval.py prompt_dic (@3d85f92)"
MAX_API_RETRY = 5  # eval.py
# pandas.read_csv's default missing-value strings (pandas' _libs.parsers STR_NA_VALUES)
PANDAS_NA = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
SUBMIT_COLUMNS = ["index", "question", "human_annotation", "gpt4_ha_answer", "category", "task_name", "response"]


def pandas_cell(text: str) -> str:
    """What eval.py formats into its prompt for a TSV cell: pandas reads the missing-value strings as
    NaN, which prints as "nan"."""
    return "nan" if text in PANDAS_NA else text


def mean100(values: Sequence[float]) -> float | None:
    """compute_score: ``np.mean(scores) * 100`` (numpy, for the same floats)."""
    import numpy as np

    return float(np.mean(values) * 100) if values else None


def process_reply(content: str) -> tuple[float, float] | None:
    """eval.py ``evaluate``: ``process_reply(content + '\\nok')`` -- the first line of the stripped
    reply split on single spaces into exactly two floats; None where it raises."""
    try:
        generated, _reason = (content + "\nok").strip().split("\n", 1)
        s1, s2 = generated.strip().split(" ")
        return float(s1), float(s2)
    except ValueError:
        return None


@register("touchstone")
class TouchStone(JudgedAdapter):
    description = "TouchStone, text-only judge, both orders, mean*100 per category"
    scorer = "TouchStone eval.py (both orders, up to 5 requests per round, mean*100)"
    prompt_version = PROMPT_VERSION

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
                              meta={k: r.get(k) or "" for k in ("index", "question", "human_annotation",
                                                                 "gpt4_ha_answer", "category", "task_name")}))
        return items

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        log = Judgments(self.name, judge, self.prompt_version, {"system_prompt": SYSTEM, "prompt_template": TEMPLATE,
                                                                 "prompt": PROMPT})
        model_scores: dict[str, list[float]] = defaultdict(list)
        ref_scores: list[float] = []
        counts = {"items": len(items), "missing_prediction": 0, "rounds": 0, "error_rounds": 0, "requests": 0,
                  "reasks": 0}
        for it in items:
            pred = predictions.get(it.id)
            counts["missing_prediction"] += pred is None
            m = {k: pandas_cell(v) for k, v in it.meta.items()}
            answer = pandas_cell(pred or "")
            for order, (a1, a2, model_first) in (("round1", (m["gpt4_ha_answer"], answer, False)),
                                                 ("round2", (answer, m["gpt4_ha_answer"], True))):
                query = TEMPLATE.format(human_annotation=m["human_annotation"], question=m["question"],
                                        answer_1=a1, answer_2=a2, prompt=PROMPT)
                parsed = None
                for attempt in range(MAX_API_RETRY):  # eval.py evaluate(): try, on any exception try again
                    reply = log.ask(it.id, query, order=order, attempt=attempt, system=SYSTEM, temperature=0.0,
                                    stop=["\n"])
                    parsed = None if reply is None else process_reply(reply)
                    log.note(scores=list(parsed) if parsed else None)
                    counts["requests"] += 1
                    counts["reasks"] += attempt > 0
                    if parsed is not None:
                        break
                counts["rounds"] += 1
                if parsed is None:  # (0, 0, "error"): compute_score skips the round
                    counts["error_rounds"] += 1
                    continue
                mine, ref = (parsed[0], parsed[1]) if model_first else (parsed[1], parsed[0])
                ref_scores.append(ref)
                model_scores["\0all"].append(mine)
                for cat in it.meta["category"].split(","):
                    model_scores[cat].append(mine)
        counts["judge_errors"] = log.errors
        allv = model_scores.pop("\0all", [])
        return self.result(mean100(allv), breakdown={k: mean100(v) for k, v in sorted(model_scores.items())},
                           scorer=self.scorer, judge=judge_name(judge), counts=counts,
                           prompt_version=self.prompt_version,
                           details={**log.details(), "reference_gpt4_ha_score": mean100(ref_scores)})

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """``<model>.tsv``, the submit file ``eval.py`` takes (the official TSV's text columns plus
        ``response``; the base64 image column is left out, eval.py does not read it), and with a
        judge ``evaluation_results_<model>.jsonl`` in the format eval.py writes and ``compute_score``
        reads. (eval.py as published checks ``num_questions == 908`` with an undefined name, so its
        ``process`` needs that line fixed before it runs; ``compute_score`` runs as is.)"""
        answered, predictions = list(items), blank_missing(items, predictions)
        tsv = out / f"{model_id}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        with tsv.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(SUBMIT_COLUMNS)
            for it in answered:
                w.writerow([it.meta[c] for c in SUBMIT_COLUMNS[:-1]] + [predictions[it.id]])
        written = [tsv]
        if judged and judged.get("judgments"):
            final: dict[tuple[str, str], dict[str, Any]] = {}
            for r in judged["judgments"]:
                final[(r["id"], r["order"])] = r  # the last request of a round is the one that counts
            rows = []
            for idx, it in enumerate(answered):
                rounds = {}
                for order, m1, m2, a1, a2 in (("round1", "gpt4-ha", model_id, it.meta["gpt4_ha_answer"],
                                               predictions[it.id]),
                                              ("round2", model_id, "gpt4-ha", predictions[it.id],
                                               it.meta["gpt4_ha_answer"])):
                    r = final.get((it.id, order)) or {}
                    sc = r.get("scores")
                    rounds[order] = {"model1": m1, "model2": m2, "answer1": a1, "answer2": a2,
                                     "score1": sc[0] if sc else 0, "score2": sc[1] if sc else 0,
                                     "reason": "ok" if sc else "error"}
                rows.append({"ques_id": idx, "human_annotation": it.meta["human_annotation"],
                             "category": it.meta["category"], "task_name": it.meta["task_name"], **rounds})
            written.append(write_jsonl(out / f"evaluation_results_{model_id}.jsonl", rows))
        return written
