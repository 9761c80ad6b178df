"""Unit tests of each official scoring rule, on hand-computed edge cases.

Where a value is marked "official", it was produced by running the official script on the same
input: LLaVA ``llava/eval/m4c_evaluator.py`` (TextVQAAccuracyEvaluator / EvalAIAnswerProcessor,
haotian-liu/LLaVA), MME ``eval_tool/calculation.py`` rules, MMMU ``eval/utils/eval_utils.py``.
"""

from __future__ import annotations

import random

import pytest

from bench.benchmarks.choice import (
    can_infer,
    mmmu_eval_open,
    mmmu_parse_multi_choice,
    mmmu_parse_open,
)
from bench.benchmarks.gqa import gqa_match
from bench.benchmarks.llava_bench import parse_score, relative_score
from bench.benchmarks.mmbench import circular_scores
from bench.benchmarks.mme import parse_pred_ans, subtask_score
from bench.benchmarks.mmvet import parse_grade
from bench.benchmarks.pairwise import (
    ERROR,
    LOSS,
    TIE,
    WIN,
    fastchat_outcome,
    fastchat_verdict,
    fastchat_winners,
)
from bench.benchmarks.touchstone import process_reply
from bench.benchmarks.vqa_eval import normalize_answer, vqa_accuracy

# -- MME -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pred,label", [
    ("yes", "yes"), ("no", "no"), ("yes, there is", "yes"), ("no.", "no"), (" yes", "yes"),
    ("not sure", "no"),          # official quirk: "no" inside the first 4 characters
    ("maybe yes", "other"),      # "yes" only after the first 4 characters
    ("there is no", "other"), ("", "other"), ("know", "no"),
])
def test_mme_parse_pred_ans(pred: str, label: str) -> None:
    assert parse_pred_ans(pred) == label


def test_mme_acc_plus_by_hand() -> None:
    # image 1: both right; image 2: one right ("Yes" is lower-cased first); image 3: both wrong.
    pairs = [[("yes", "Yes"), ("no", "No")], [("yes", "yes"), ("no", "yes")], [("yes", "maybe"), ("no", "yes")]]
    score, acc, acc_plus, other = subtask_score(pairs)
    assert acc == pytest.approx(3 / 6)
    assert acc_plus == pytest.approx(1 / 3)
    assert score == pytest.approx(50 + 100 / 3)
    assert other == 1


# -- VQA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,norm", [  # official EvalAIAnswerProcessor outputs
    ("Two dogs.", "2 dogs"), ("the cat", "cat"), ("dont", "don't"), ("Hello, World!", "hello world"),
    ("1,000", "1000"), ("a.b", "ab"), ("yes?", "yes"), ("It's red", "it 's red"), ("3.5 m", "3.5 m"),
    ("none", "0"), ('"quoted" text', "quoted text"), ("e-mail", "e mail"), ("x/y", "x y"), ("ten", "10"),
])
def test_vqa_normaliser_matches_official(raw: str, norm: str) -> None:
    assert normalize_answer(raw) == norm


@pytest.mark.parametrize("pred,answers,expected", [  # official TextVQAAccuracyEvaluator values
    ("Nokia.", ["nokia"] * 7 + ["nokia phone"] * 2 + ["a nokia"], 1.0),
    ("nokia phone", ["nokia"] * 7 + ["nokia phone"] * 2 + ["a nokia"], 0.6),  # (2*(1/3) + 8*(2/3)) / 10
    ("2", ["2", "two", "2", "3", "2", "2", "two", "3", "3", "4"], 1.0),
    ("3", ["2", "two", "2", "3", "2", "2", "two", "3", "3", "4"], 0.9),      # (3*(2/3) + 7*1) / 10
    ("4", ["2", "two", "2", "3", "2", "2", "two", "3", "3", "4"], 0.3),      # only 1 match: 9 subsets give 1/3
    ("five", ["2", "two", "2", "3", "2", "2", "two", "3", "3", "4"], 0.0),
])
def test_vqa_leave_one_out(pred: str, answers: list[str], expected: float) -> None:
    assert vqa_accuracy(pred, answers) == pytest.approx(expected)


# -- MMBench ---------------------------------------------------------------------------------------

OPTS = {"A": "teddy bear", "B": "rabbit", "C": "cat", "D": "dog"}


@pytest.mark.parametrize("answer,letter", [
    ("A", "A"), ("(B)", "B"), ("C.", "C"), ("The answer is D", "D"),
    ("A or B", None),               # two letters -> not unique
    ("a cute teddy bear", "A"),     # no letter token ('a' is lower case) -> unique option text
    ("cat or dog", None),           # two option texts -> judge fallback
    ("Cannot determine the answer", "Z"),
    ("spider", None),
])
def test_mmbench_option_extraction(answer: str, letter: str | None) -> None:
    assert can_infer(answer, dict(OPTS)) == letter


def test_mmbench_circular_grouping() -> None:
    correct = {0: True, 1_000_000: True, 2_000_000: True, 1: True, 1_000_001: False, 2: True}
    assert circular_scores(correct) == {0: True, 1: False, 2: True}


# -- MMMU ----------------------------------------------------------------------------------------

CH = ["A", "B", "C", "D"]
IDX = {"A": "red apple", "B": "blue sky", "C": "green grass", "D": "yellow sun"}


@pytest.mark.parametrize("resp,letter", [
    ("(B)", "B"), ("The answer is (C).", "C"),
    ("(A) is wrong, the answer is (D)", "D"),      # several bracketed -> last one
    ("B", "B"), ("I think C is right", "C"),        # bare letter needs spaces around it
    ("A and later D", "D"),                         # several bare letters -> last one
    ("I am quite sure that it shows the blue sky today", "B"),  # > 5 words -> option text
    ("(A) but A B", "A"),                           # brackets checked first
])
def test_mmmu_parsing_order(resp: str, letter: str) -> None:
    got, guessed = mmmu_parse_multi_choice(resp, CH, IDX, random.Random(0))
    assert (got, guessed) == (letter, False)


def test_mmmu_fixed_seed_fallback() -> None:
    rng, ref = random.Random(42), random.Random(42)
    picks = [mmmu_parse_multi_choice("blue sky", CH, IDX, rng) for _ in range(5)]  # <= 5 words: no text match
    assert all(g for _, g in picks)
    assert [p for p, _ in picks] == [ref.choice(CH) for _ in range(5)]


def test_mmmu_open_answers() -> None:
    assert mmmu_eval_open("4", mmmu_parse_open("So the answer is 4."))
    assert mmmu_eval_open("1,000", mmmu_parse_open("The result is 1000"))
    assert mmmu_eval_open("paris", mmmu_parse_open("Therefore the capital is Paris"))
    assert not mmmu_eval_open("5", mmmu_parse_open("It is 4"))
    assert mmmu_eval_open("3.14", mmmu_parse_open("pi = 3.1416"))  # rounded to 2 decimals


# -- GQA -------------------------------------------------------------------------------------------


def test_gqa_exact_match() -> None:
    assert gqa_match("Red.", "red")
    assert gqa_match("yes", "yes")
    assert not gqa_match("the red one", "red")
    assert not gqa_match("red..x", "red")


# -- pairwise / judged replies -----------------------------------------------------------------------


def test_pairwise_verdicts_and_tie_rules() -> None:
    # the full FastChat / MLLM-Bench rules are in test_bench_conformance.py
    assert fastchat_verdict("... [[A]]") == "A"
    assert fastchat_verdict("[[C]]") == "tie"
    assert fastchat_verdict("A is better") == ERROR
    assert fastchat_outcome(*fastchat_winners("A", "B")) == WIN
    assert fastchat_outcome(*fastchat_winners("B", "A")) == LOSS
    assert fastchat_outcome(*fastchat_winners("A", "A")) == TIE
    assert fastchat_outcome(*fastchat_winners("A", ERROR)) is None


def test_judge_reply_parsers() -> None:
    assert parse_grade("0.8") == 0.8
    assert parse_grade("1.2") is None and parse_grade("n/a") is None
    assert process_reply("7 5") == (7.0, 5.0)
    assert process_reply("7, 5") is None          # TouchStone splits on a single space only
    assert parse_score("8,6\nbecause") == [8.0, 6.0]  # LLaVA replaces commas with spaces
    assert parse_score("Scores: 8 6") == [-1, -1]
    assert relative_score([(8, 6), (10, 10)]) == 88.9  # round(8 / 9 * 100, 1), as summarize_gpt_review prints
