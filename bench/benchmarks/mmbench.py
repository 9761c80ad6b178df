"""MMBench (dev, en) with CircularEval, scored as VLMEvalKit does.

Official file: a TSV with ``index, question, hint, A..D, answer, category, l2-category, image``
(base64; circular copies may hold the index of the row with the image instead, as in
VLMEvalKit's TSVs). Circular copies are pre-expanded with ``index = base + k * 1e6``. A base
question counts only when every copy is answered right. Answer extraction: VLMEvalKit
``can_infer`` (unique option letter, else unique option text); answers it cannot place go to the
judge matcher (VLMEvalKit ``build_prompt``), re-asked up to 3 times, then counted wrong.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from allava.chat import multiple_choice_prompt
from bench.benchmarks.base import (
    Adapter,
    DataFormatError,
    Item,
    JudgeLike,
    ScoreResult,
    blank_missing,
    decode_b64_image,
    is_missing,
    judge_name,
    pct,
    read_tsv,
)
from bench.benchmarks.choice import can_infer
from bench.benchmarks.registry import register
from bench.benchmarks.xlsx import write_xlsx

CIRCULAR_OFFSET = 1_000_000
SUBMISSION_DROP = ("hint", "category", "source", "image", "comment", "l2-category")  # convert_mmbench_for_submission.py
JUDGE_RETRIES = 3
MATCH_TEMPLATE = (
    "You are an AI assistant who will help me to match an answer with several options of a single-choice question. "
    "You are provided with a question, several options, and an answer, and you need to find which option is most "
    "similar to the answer. If the meaning of all options are significantly different from the answer, output Z. "
    "Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n"
    "Example 1: \nQuestion: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: a cute teddy bear\nYour output: A\n"
    "Example 2: \nQuestion: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: Spider\nYour output: Z\n"
    "Example 3: \nQuestion: {}?\nOptions: {}\nAnswer: {}\nYour output: "
)


MATCH_PROMPT_VERSION = "vlmevalkit build_prompt (MMBench option matcher)"


def option_string(options: dict[str, str]) -> str:
    return "".join(f"{k}. {v}\n" for k, v in options.items())


def circular_scores(correct: dict[int, bool]) -> dict[int, bool]:
    """Base index -> True only when every circular copy of it is right."""
    out: dict[int, bool] = {}
    for index, ok in correct.items():
        base = index % CIRCULAR_OFFSET
        out[base] = out.get(base, True) and ok
    return out


@register("mmbench")
class MMBench(Adapter):
    description = "MMBench dev (en), CircularEval, option extraction + judge fallback"

    def read(self, root: Path) -> list[Item]:
        path = self.data_file(root, "MMBench_DEV_EN.tsv", glob="MMBench*.tsv")
        rows = read_tsv(path, self.name, ["index", "question", "A", "B", "answer", "image"])
        images: dict[str, str] = {r["index"]: r["image"] for r in rows if r.get("image") and len(r["image"]) > 64}
        items: list[Item] = []
        for r in rows:
            try:
                index = int(r["index"])
            except ValueError:
                self.skip("bad_row", f"index {r['index']!r} is not an integer")
                continue
            raw = r["image"] if len(r.get("image") or "") > 64 else images.get((r.get("image") or "").strip())
            image = decode_b64_image(raw) if raw else None
            if image is None:
                self.skip("missing_image", f"index {index}: no decodable base64 image")
                continue
            options = {c: r[c] for c in "ABCDEFGHI" if c in r and not is_missing(r[c])}
            question = r["question"]
            if not is_missing(r.get("hint")):
                question = f"{r['hint']}\n{question}"
            answer = (r.get("answer") or "").strip()
            if answer not in options:
                self.skip("bad_row", f"index {index}: answer {answer!r} is not one of {list(options)}")
                continue
            base = index % CIRCULAR_OFFSET
            items.append(Item(id=str(index), prompt=multiple_choice_prompt(question, list(options.values())),
                              image=image, stratum=r.get("category", ""), group=str(base),
                              meta={"index": index, "options": options, "answer": answer, "question": r["question"],
                                    "category": r.get("category", ""), "l2": r.get("l2-category", ""),
                                    "row": {k: v for k, v in r.items() if k != "image"}}))
        if not items and rows:
            raise DataFormatError(f"mmbench: no usable rows in {path}")
        return items

    def resample_copy(self, item: Item, draw: int) -> Item:
        """CircularEval keys answers by the question index (copy k of base b is b + k x 1,000,000): a
        resampled question gets the base ``draw``, so two draws of one question are two questions."""
        copy = super().resample_copy(item, draw)
        copy.meta = {**item.meta, "index": (item.meta["index"] // CIRCULAR_OFFSET) * CIRCULAR_OFFSET + draw}
        return copy

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        extracted: dict[str, str | None] = {}
        need_judge = []
        missing = 0
        for it in items:
            pred = predictions.get(it.id)
            missing += pred is None
            letter = can_infer(pred or "", dict(it.meta["options"]))
            extracted[it.id] = letter
            if letter is None:
                need_judge.append(it)
        counts = {"items": len(items), "missing_prediction": missing, "needed_judge": len(need_judge)}
        scorer = "VLMEvalKit can_infer + CircularEval"
        if need_judge and judge is None:
            lower = self._aggregate(items, extracted)[0]
            return self.result(None, status=f"not scored: no judge ({len(need_judge)} answers need the judge matcher)",
                               scorer=scorer, counts=counts,
                               details={"exact_extraction_only_lower_bound": lower})
        unmatched = 0
        counts["reasks"] = 0
        for it in need_judge:
            letter = self._ask_judge(judge, it, predictions.get(it.id) or "", counts)
            unmatched += letter is None
            extracted[it.id] = letter
        counts["judge_unmatched"] = unmatched
        headline, breakdown, vanilla = self._aggregate(items, extracted)
        return self.result(headline, breakdown=breakdown, scorer=scorer + (" + judge matcher" if need_judge else ""),
                           judge=judge_name(judge) if need_judge else None, counts=counts,
                           prompt_version=MATCH_PROMPT_VERSION if need_judge else None,
                           details={"vanilla_accuracy": vanilla})

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """``<model>.xlsx``, the spreadsheet the MMBench evaluation server takes, laid out as LLaVA's
        ``scripts/convert_mmbench_for_submission.py`` makes it: the TSV's columns less hint, category,
        source, image, comment and l2-category, with ``prediction`` (the raw answer) inserted as the
        7th column; one row per item answered, in file order (circular copies included)."""
        answered, predictions = list(items), blank_missing(items, predictions)
        if not answered:
            return []
        header = [c for c in answered[0].meta["row"] if c not in SUBMISSION_DROP]
        header.insert(6, "prediction")

        def cell(it: Item, col: str) -> str | int | None:
            if col == "prediction":
                return predictions[it.id]
            if col == "index":
                return it.meta["index"]
            value = it.meta["row"].get(col)
            return None if is_missing(value) else value

        return [write_xlsx(out / f"{model_id}.xlsx", header, [[cell(it, c) for c in header] for it in answered])]

    def _ask_judge(self, judge: JudgeLike, it: Item, pred: str, counts: dict[str, int]) -> str | None:
        options = dict(it.meta["options"])
        prompt = MATCH_TEMPLATE.format(it.meta["question"], option_string(options), pred)
        for attempt in range(JUDGE_RETRIES):
            counts["reasks"] += attempt > 0
            try:
                reply = judge.ask(prompt, temperature=0.5 * attempt, tag=f"mmbench:{it.id}:{attempt}",
                                  prompt_version=MATCH_PROMPT_VERSION)
            except RuntimeError:
                return None
            letter = can_infer(reply, options)
            if letter:
                return letter
        return None

    def _aggregate(self, items: Sequence[Item], extracted: dict[str, str | None]) -> tuple[float | None, dict, float | None]:
        correct = {it.meta["index"]: extracted.get(it.id) == it.meta["answer"] for it in items}
        circ = circular_scores(correct)
        cat_of = {it.meta["index"] % CIRCULAR_OFFSET: it.meta["category"] for it in items}
        by_cat: dict[str, list[bool]] = defaultdict(list)
        for base, ok in circ.items():
            by_cat[cat_of[base]].append(ok)
        breakdown = self.percent_by_key(by_cat)
        originals = [ok for idx, ok in correct.items() if idx < CIRCULAR_OFFSET]
        return pct(sum(circ.values()), len(circ)), breakdown, pct(sum(originals), len(originals))
