"""VQA accuracy as the official TextVQA/VQA evaluator computes it.

Reproduces LLaVA's ``llava/eval/m4c_evaluator.py`` (``EvalAIAnswerProcessor`` and
``TextVQAAccuracyEvaluator``), itself copied from facebookresearch/mmf
``pythia/tasks/processors.py#L897``. Quirks are kept on purpose because they change scores:
the period regex is passed ``re.UNICODE`` as its *count* argument, the punctuation rule looks at
the *input* text, and the score is the mean over the 10 leave-one-out subsets of min(1, matches/3).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bench.benchmarks._vqa_contractions import CONTRACTIONS

NUMBER_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
PUNCTUATIONS = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]


def _word_tokenize(word: str) -> str:
    word = word.lower()
    word = word.replace(",", "").replace("?", "").replace("'s", " 's")
    return word.strip()


def _process_punctuation(in_text: str) -> str:
    out_text = in_text
    for p in PUNCTUATIONS:
        if (p + " " in in_text or " " + p in in_text) or (re.search(COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return PERIOD_STRIP.sub("", out_text, re.UNICODE)  # count=re.UNICODE (32): official quirk


def _process_digit_article(in_text: str) -> str:
    words = [NUMBER_MAP.get(w, w) for w in in_text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """EvalAIAnswerProcessor.__call__: tokenise, punctuation, number words, articles, contractions."""
    item = _word_tokenize(answer)
    item = item.replace("\n", " ").replace("\t", " ").strip()
    item = _process_punctuation(item)
    return _process_digit_article(item)


def answer_scores(raw_answers: Sequence[str]) -> dict[str, float]:
    """Score of every distinct normalised human answer: mean over the leave-one-out subsets."""
    answers = [normalize_answer(a) for a in raw_answers]
    gt = list(enumerate(answers))
    scores: dict[str, float] = {}
    for unique in set(answers):
        accs = []
        for held_out in gt:
            others = [a for a in gt if a != held_out]
            accs.append(min(1.0, sum(1 for a in others if a[1] == unique) / 3))
        scores[unique] = sum(accs) / len(accs)
    return scores


def vqa_accuracy(prediction: str, raw_answers: Sequence[str]) -> float:
    """Accuracy of one prediction against the (10) human answers, in [0, 1]."""
    return answer_scores(raw_answers).get(normalize_answer(prediction), 0.0)
