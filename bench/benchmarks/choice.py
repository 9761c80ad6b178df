"""Option extraction from free-form answers, per the official tools.

* MMBench: VLMEvalKit ``vlmeval/utils/matching_util.py`` ``can_infer_option`` /
  ``can_infer_text`` / ``can_infer`` (a unique option letter after replacing punctuation by spaces,
  else a unique option text contained in the answer, else nothing -> judge fallback).
* MMMU: MMMU-Benchmark/MMMU ``eval/utils/eval_utils.py`` ``parse_multi_choice_response``,
  ``parse_open_response``, ``eval_multi_choice``, ``eval_open`` (parsing order "(A)" -> " A " ->
  option text for responses longer than 5 words; several candidates -> the last one; none -> a
  random option from an RNG seeded with 42).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence

MMBENCH_REJECTIONS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def can_infer_option(answer: str, choices: dict[str, str]) -> str | None:
    """A letter when exactly one option letter appears as a token; 'Z' for refusals."""
    if "Failed to obtain answer via API" in answer:
        return None
    for err in MMBENCH_REJECTIONS:
        if err in answer:
            return "Z"
    mod = answer
    for ch in ".()[],:;!*#{}":
        mod = mod.replace(ch, " ")
    splits = [x.strip() for x in mod.split()]
    count = sum(1 for c in choices if c in splits)
    if count == 1:
        for c in choices:
            if c in splits:
                return c
    elif count == 0 and sum(1 for c in ("Z", "") if c in splits) == 1:
        return "Z"
    return None


def can_infer_text(answer: str, choices: dict[str, str]) -> str | None:
    """A letter when exactly one option's text is contained in the answer (case-insensitive)."""
    low = answer.lower()
    cands = [k for k, v in choices.items() if k in string.ascii_uppercase and str(v).lower() in low]
    return cands[0] if len(cands) == 1 else None


def can_infer(answer: str, choices: dict[str, str]) -> str | None:
    answer = str(answer)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)


# -- MMMU ------------------------------------------------------------------------------------------
def mmmu_parse_multi_choice(response: str, all_choices: Sequence[str], index2ans: dict[str, str],
                            rng: random.Random) -> tuple[str, bool]:
    """MMMU's parse_multi_choice_response; returns (letter, guessed) where guessed marks the
    fixed-seed random fallback."""
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "
    index_ans, ans_with_brack = True, False
    candidates: list[str] = []
    for choice in all_choices:
        if f"({choice})" in response:
            candidates.append(choice)
            ans_with_brack = True
    if not candidates:
        candidates = [c for c in all_choices if f" {c} " in response]
    if not candidates and len(response.split()) > 5:
        for index, ans in index2ans.items():
            if ans.lower() in response.lower():
                candidates.append(index)
                index_ans = False
    if not candidates:
        return rng.choice(list(all_choices)), True
    if len(candidates) == 1:
        return candidates[0], False
    if index_ans:
        pattern = "({})" if ans_with_brack else " {} "
        starts = [response.rfind(pattern.format(c)) for c in candidates]
    else:
        starts = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    return candidates[starts.index(max(starts))], False  # np.argmax: first of the maxima


def _check_is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def mmmu_normalize_str(text: str) -> list[str | float]:
    text = text.strip()
    if _check_is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    if len(text) == 1:
        return [" " + text, text + " "]
    return [text]


def mmmu_extract_numbers(text: str) -> list[str]:
    commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", text)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", text)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", text)
    return commas + scientific + simple


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    subs = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    keys: list[str] = []
    for index, resp in enumerate(subs):
        if index == len(subs) - 1:
            indicators.extend(["="])
        shortest: str | None = None
        for ind in indicators:
            if ind in resp:
                tail = resp.split(ind)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in [":", ",", ".", "!", "?", ";", ":", "'"]:
            keys.append(shortest)
    return keys or [response]


def mmmu_parse_open(response: str) -> list[str | float]:
    keys = _key_subresponses(response)
    preds: list[str] = list(keys)
    for resp in keys:
        preds.extend(mmmu_extract_numbers(resp))
    out: list[str | float] = []
    for p in preds:
        out.extend(mmmu_normalize_str(p))
    return list(set(out))


def mmmu_eval_open(gold: str | list[str], preds: list[str | float]) -> bool:
    norm: list[str | float] = []
    for ans in gold if isinstance(gold, list) else [gold]:
        norm.extend(mmmu_normalize_str(ans))
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(n, str) and n in pred for n in norm):
                return True
        elif pred in norm:
            return True
    return False


def mmmu_eval_multi_choice(gold: str | list[str], pred: str) -> bool:
    return pred in gold if isinstance(gold, list) else gold == pred
