"""MM-Vet: open answers graded in [0, 1] by a judge with the official few-shot table prompt.

Official files: ``mm-vet.json`` = ``{id: {imagename, capability: [...], question, answer}}`` and
``images/<imagename>``. Grading follows yuweihao/MM-Vet @ acde843 ``mm-vet_evaluator.py`` (one run,
its ``--num_run`` default): max_tokens 3, temperature 0; the reply's first space-separated token,
stripped, must be a float not above 1.0 and not below 0.0 (so "nan" passes, as there); otherwise
re-ask with the "Predict the correctness of the answer (digit): " suffix, raising the temperature by
0.5 after each re-ask; when the try counter passes 5 the score is 0 (the last reply is not read).
Total = mean x 100, also per capability.
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
    pct,
    write_json_file,
)
from bench.benchmarks.registry import register

# Byte for byte from yuweihao/MM-Vet mm-vet_evaluator.py @ acde843 (module-level ``prompt``).
GRADER_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""
REASK_SUFFIX = "\nPredict the correctness of the answer (digit): "
MAX_TRIES = 5


def grader_query(question: str, answer: str, prediction: str) -> str:
    gt = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return GRADER_PROMPT + "\n" + " | ".join([question, gt, prediction, ""])


PROMPT_VERSION = "mm-vet mm-vet_evaluator.py prompt (@acde843)"


def parse_grade(content: str) -> float | None:
    """The score the evaluator reads from a reply, or None where its ``try`` fails."""
    try:
        score = float(content.split(" ")[0].strip())
    except ValueError:
        return None
    return None if score > 1.0 or score < 0.0 else score  # a NaN passes both tests, as in the evaluator


def grade(judge: JudgeLike | Judgments, question: str, answer: str, prediction: str, tag: str = "") -> tuple[float, int, bool]:
    """(score, asks, gave_up) following the official loop exactly (including that the reply to
    the last re-ask is never parsed). Raises RuntimeError when the judge fails."""
    log = judge if isinstance(judge, Judgments) else Judgments("mmvet", judge, PROMPT_VERSION, {})
    query = grader_query(question, answer, prediction)

    def ask(text: str, temperature: float, attempt: int) -> str:
        reply = log.ask(tag, text, attempt=attempt, temperature=temperature, max_tokens=3)
        if reply is None:
            raise RuntimeError(log.records[-1]["error"])
        return reply

    content = ask(query, 0.0, 0)
    asks, try_time, temperature = 1, 1, 0.0
    while True:
        score = parse_grade(content)
        if score is not None:
            log.note(score=score)
            return score, asks, False
        content = ask(query + REASK_SUFFIX, temperature, asks)
        asks += 1
        try_time += 1
        temperature += 0.5
        if try_time > MAX_TRIES:
            log.note(score=0.0, gave_up=True)
            return 0.0, asks, True


@register("mmvet")
class MMVet(JudgedAdapter):
    description = "MM-Vet, GPT grader (official prompt), per capability"
    scorer = "MM-Vet GPT grader (mm-vet_evaluator.py prompt, re-ask up to 5 then 0)"
    prompt_version = PROMPT_VERSION

    def read(self, root: Path) -> list[Item]:
        base, data = self.read_json_file(root, "mm-vet.json",
                                         "must map ids to {imagename, capability, question, answer}")
        items = []
        for qid, q in self.complete_rows(data.items(), ("imagename", "capability", "question", "answer")):
            image = self.find_image([base / "images" / q["imagename"], base / q["imagename"]], q["imagename"])
            if image is None:
                continue
            caps = list(q["capability"])
            items.append(Item(id=str(qid), prompt=q["question"], image=image, stratum=",".join(sorted(caps)),
                              meta={"question": q["question"], "answer": q["answer"], "capability": caps,
                                    "record": q}))
        return items

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        log = Judgments(self.name, judge, self.prompt_version, {"prompt": GRADER_PROMPT, "reask_suffix": REASK_SUFFIX})
        scores: dict[str, float] = {}
        counts = {"items": len(items), "missing_prediction": 0, "reasks": 0, "unparsable_gave_0": 0, "judge_errors": 0}
        for it in items:
            pred = predictions.get(it.id)
            if pred is None:
                counts["missing_prediction"] += 1
                scores[it.id] = 0.0
                continue
            try:
                s, asks, gave_up = grade(log, it.meta["question"], it.meta["answer"], pred, tag=it.id)
            except RuntimeError:
                counts["judge_errors"] += 1
                scores[it.id] = 0.0
                continue
            scores[it.id] = s
            counts["reasks"] += asks - 1
            counts["unparsable_gave_0"] += gave_up
        counts["requests"] = len(log.records)
        per: dict[str, list[float]] = defaultdict(list)
        for it in items:
            for cap in set(it.meta["capability"]):
                per[cap].append(scores[it.id])
        return self.result(pct(sum(scores.values()), len(scores)), scorer=self.scorer, judge=judge_name(judge),
                           breakdown=self.percent_by_key(per), counts=counts, prompt_version=self.prompt_version,
                           details={**log.details(), "per_item": scores})

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """``<model>.json`` = ``{id: answer}``, the results file ``mm-vet_evaluator.py --result_file``
        takes, and ``mm-vet.json`` holding the questions answered (``--mmvet_path`` = this folder:
        the evaluator grades every id of that file)."""
        answered, predictions = list(items), blank_missing(items, predictions)
        return [write_json_file(out / f"{model_id}.json", {it.id: predictions[it.id] for it in answered}, indent=2),
                write_json_file(out / "mm-vet.json", {it.id: it.meta["record"] for it in answered}, indent=2)]
