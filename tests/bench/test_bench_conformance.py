"""Conformance of every scorer with its benchmark's official rule, and of every submission file with
the official tool's input format.

Each judged test drives the adapter with an in-process scripted judge (no network) whose replies hit
the official rule's edge cases; the expected numbers are worked out by hand from the official
script named in the test's docstring (repository @ commit, file, function), with the arithmetic in
the comments. Where the official tool is a script users run on our files, the test reads the file we
write the way that script reads it and gets the same number: with the official code itself where it is
a package (FastChat's show_result.py from fschat; pandas.read_excel with openpyxl for MMBench's
spreadsheet, both in the dev extra), else re-implemented here.
Official prompts are checked byte for byte through their sha256 digests, taken from the official
files at the commits named.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.benchmarks import REPORT_BENCHMARKS, Item, get_adapter, mmvet, touchstone, vicuna80
from bench.benchmarks import llava_bench as llava
from bench.benchmarks import mllm_bench as mllm
from bench.benchmarks.emt import PROMPT_VERSION as EMT_VERSION
from bench.benchmarks.pairwise import mllm_valid, mllm_vote
from bench.benchmarks.submission import model_id, write_submissions
from bench.benchmarks.xlsx import column_letter, read_xlsx

DATA = Path(__file__).parent / "data"
MODEL = "gguf_Q4_0"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class ScriptedJudge:
    """In-process judge: ``script(prompt, options, n)`` gives the reply to the n-th request (0-based)
    of this exact prompt, or an exception to raise (a judge that gave up)."""

    model = "scripted-judge"

    def __init__(self, script) -> None:
        self.script = script
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def ask(self, prompt: str, **options: Any) -> str:
        n = sum(1 for p, _ in self.calls if p == prompt)
        self.calls.append((prompt, options))
        reply = self.script(prompt, options, n)
        if isinstance(reply, BaseException):
            raise reply
        return reply


# -- official prompts, byte for byte -----------------------------------------------------------------

# sha256 of the official strings, taken from the files at the commits the adapters name
OFFICIAL_PROMPTS = {
    # lm-sys/FastChat fastchat/llm_judge/data/judge_prompts.jsonl @ 0e6d3e4b
    "pair-v2 system": (vicuna80.PAIR_V2_SYSTEM, "8d6df8feee26e1c9994a4fae884fc839bfcb1787a3a9522d1be611db68c93338"),
    "pair-v2 template": (vicuna80.PAIR_V2_TEMPLATE, "22f93e573bf9343e52c3dd0a36b1a033a47a6dc0045ab3d40357da8d3c613d57"),
    "pair-math-v1 system": (vicuna80.PAIR_MATH_V1_SYSTEM,
                            "0f6f71b71c14a4914b95d9272901c265d73dbc772319416e3180820c9962b2c0"),
    "pair-math-v1 template": (vicuna80.PAIR_MATH_V1_TEMPLATE,
                              "16f835dc77def64b208c62cfa9ac5992cb965d769f138362741c139d1fc7281b"),
    # haotian-liu/LLaVA llava/eval/table/rule.json (llava_bench_*) and eval_gpt_review_bench.py @ c121f04
    "llava rule": (llava.RULE, "2ce22b562d6008864970ea863ac8a4d385ea6f2e64ab1313a23f825202a9529d"),
    "llava system": (llava.SYSTEM, "8ec001fd8f1a623f9e444c9eca7be1cc3ee529003e931167a1b44958132baf33"),
    # OFA-Sys/TouchStone eval.py prompt_dic @ 3d85f92
    "touchstone system": (touchstone.SYSTEM, "8ec001fd8f1a623f9e444c9eca7be1cc3ee529003e931167a1b44958132baf33"),
    "touchstone template": (touchstone.TEMPLATE, "53d075fa4bfe8e2440fa30a0d70cf61013e5f22550f65b8c3cac4acd71452075"),
    "touchstone prompt": (touchstone.PROMPT, "b7a431dc6985138ce0d39e6887868894e722ef5db34ea65e0a0e3fe2fce1f499"),
    # FreedomIntelligence/MLLM-Bench scripts/prompts.py @ 403f82c9
    "mllm gpt4v_role": (mllm.GPT4V_ROLE, "e2b077e2123d5de8ac3d9eb230a206a9f6a38284b3ae907c094c7b70630f587a"),
    "mllm gpt4v_eval_template": (mllm.GPT4V_EVAL_TEMPLATE,
                                 "46b0b7f0ed4312f05759036b8ea014b5d6feaee796b43215e2077d5a9b6246d2"),
    # yuweihao/MM-Vet mm-vet_evaluator.py prompt @ acde843
    "mm-vet prompt": (mmvet.GRADER_PROMPT, "d1b3e0a5b4e72c888b77164489d705bba4dd149934fff564dfba6443d81afe3f"),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PROMPTS))
def test_judge_prompts_are_the_official_bytes(name: str) -> None:
    text, digest = OFFICIAL_PROMPTS[name]
    assert sha(text) == digest, name


# -- Vicuna-80: FastChat llm_judge -------------------------------------------------------------------

def vicuna_set(tmp: Path) -> Path:
    root = tmp / "vicuna80"
    cats = {1: "generic", 2: "generic", 3: "generic", 4: "generic", 5: "writing", 6: "writing", 7: "math",
            8: "coding", 9: "generic"}
    jsonl(root / "question.jsonl", [{"question_id": q, "category": c, "turns": [f"Q{q} question?"]}
                                    for q, c in cats.items()])
    jsonl(root / "model_answer" / "gpt-3.5-turbo.jsonl",
          [{"question_id": q, "model_id": "gpt-3.5-turbo", "choices": [{"index": 0, "turns": [f"BASE-{q}"]}]}
           for q in cats])
    jsonl(root / "reference_answer" / "gpt-4.jsonl",  # none for question 8 (coding)
          [{"question_id": 7, "model_id": "gpt-4", "choices": [{"index": 0, "turns": ["REF-7"]}]}])
    return root


# (game 1 reply, game 2 reply); game 1 shows the model as assistant A, game 2 as B
VICUNA_REPLIES = {
    1: ("A is better [[A]]", "B is better [[B]]"),   # model_1 / model_1 -> win
    2: ("[[B]]", "[[A]]"),                           # model_2 / model_2 -> loss
    3: ("[[A]]", "[[A]]"),                           # model_1 / model_2 -> inconsistent -> tie
    4: ("[[A]]", "I cannot decide."),                # error in game 2 -> dropped
    5: ("Verdict: A", "[[B]]"),                      # error in game 1 -> dropped
    6: ("[[C]]", "[[C]]"),                           # tie / tie -> tie
    7: ("[[A]]", "[[B]]"),                           # math: pair-math-v1 with the reference -> win
    9: ("[[A]]", RuntimeError("judge gave up")),     # API failure -> "$ERROR$" -> error -> dropped
}


def vicuna_script(prompt: str, options: dict, n: int):
    q = int(re.search(r"Q(\d+) question", prompt)[1])
    game1 = "[The Start of Assistant A's Answer]\nMODEL" in prompt
    return VICUNA_REPLIES[q][0 if game1 else 1]


def test_vicuna80_follows_fastchat_show_result(tmp_path: Path) -> None:
    """FastChat @ 0e6d3e4b: common.py run_judge_pair / play_a_match_pair, gen_judgment.py (NEED_REF_CATS ->
    pair-math-v1), show_result.py display_result_pairwise (error games dropped, rates over the rest).

    Kept games: q1 win, q2 loss, q3 tie, q6 tie, q7 win -> 5 games; q4, q5, q9 dropped (an error verdict
    in one order); q8 (coding) has no reference answer -> not judged. win rate = 2/5 = 40 %,
    adjusted = (2 + 2/2)/5 = 60 %, loss rate = 1/5 = 20 %. (Counting errors as ties, as before, gave 2/8.)"""
    root = vicuna_set(tmp_path)
    ad = get_adapter("vicuna80")
    items = ad.load(root)
    judge = ScriptedJudge(vicuna_script)
    res = ad.score(items, {it.id: f"MODEL-{it.id}" for it in items}, judge=judge)
    assert res.headline == pytest.approx(40.0)
    assert res.breakdown["win_rate_adjusted"] == pytest.approx(60.0)
    assert res.breakdown["loss_rate"] == pytest.approx(20.0)
    assert res.breakdown["generic"] == pytest.approx(100 / 3)  # q1 win, q2 loss, q3 tie (q4, q9 dropped)
    assert res.breakdown["writing"] == 0.0 and res.breakdown["math"] == 100.0
    c = res.counts
    assert (c["games"], c["wins"], c["losses"], c["ties"]) == (5, 2, 1, 2)
    assert (c["dropped_error_games"], c["error_verdicts"], c["judge_errors"]) == (3, 3, 1)
    assert (c["missing_reference"], c["inconsistent"], c["requests"], c["reasks"]) == (1, 1, 16, 0)
    assert res.prompt_version == vicuna80.PROMPT_VERSION and res.judge == "scripted-judge"
    # the requests: official system prompts as system messages, temperature 0, max_tokens 2048
    for prompt, opts in judge.calls:
        math = "Q7 question" in prompt
        assert opts["system"] == (vicuna80.PAIR_MATH_V1_SYSTEM if math else vicuna80.PAIR_V2_SYSTEM)
        assert (opts["temperature"], opts["max_tokens"]) == (0.0, 2048)
        assert ("[The Start of Reference Answer]\nREF-7\n" in prompt) == math
    assert judge.calls[0][0] == vicuna80.PAIR_V2_TEMPLATE.format(question="Q1 question?", answer_a="MODEL-1",
                                                                  answer_b="BASE-1")
    # every judgment carries its prompt and reply
    assert len(res.details["judgments"]) == 16 and all(r["prompt"] for r in res.details["judgments"])

    # FastChat's own files: model answers and the judgment file show_result.py reads
    paths = ad.submission_files(items, {it.id: f"MODEL-{it.id}" for it in items}, tmp_path / "sub", MODEL,
                                judged=res.details)
    sub = tmp_path / "sub"
    assert sub / "model_judgment" / "scripted-judge_pair.jsonl" in paths
    answers = read_jsonl(sub / "model_answer" / f"{MODEL}.jsonl")
    assert [a["question_id"] for a in answers] == list(range(1, 10))
    assert answers[0]["choices"][0]["turns"] == ["MODEL-1"] and answers[0]["model_id"] == MODEL
    assert (sub / "model_answer" / "gpt-3.5-turbo.jsonl").is_file()
    rows = read_jsonl(sub / "model_judgment" / "scripted-judge_pair.jsonl")
    assert len(rows) == 8
    assert {r["model_2"] for r in rows} == {"gpt-3.5-turbo"} and rows[0]["judge"] == ["scripted-judge", "pair-v2"]
    # FastChat's own show_result.py --mode pairwise-baseline (the fschat package) on the judgment file we wrote
    table = fastchat_show_result(sub / "model_judgment" / "scripted-judge_pair.jsonl", "gpt-3.5-turbo")
    assert (table[MODEL]["win"], table[MODEL]["loss"], table[MODEL]["tie"]) == (2, 1, 2)
    assert 100 * table[MODEL]["win_rate"] == pytest.approx(res.headline)
    assert 100 * table[MODEL]["win_rate_adjusted"] == pytest.approx(res.breakdown["win_rate_adjusted"])
    assert 100 * table[MODEL]["loss_rate"] == pytest.approx(res.breakdown["loss_rate"])


def fastchat_show_result(judgment_file: Path, baseline: str) -> dict[str, dict[str, float]]:
    """FastChat's ``show_result.py --mode pairwise-baseline`` from the ``fschat`` package (dev extra): its
    ``display_result_pairwise`` run on ``judgment_file``; the table it prints, as {model: {column: value}}."""
    import argparse

    show_result = pytest.importorskip("fastchat.llm_judge.show_result",
                                      reason="fschat is not installed: pip install -e '.[dev]'")
    printed: list[Any] = []
    args = argparse.Namespace(bench_name="vicuna80", input_file=str(judgment_file), judge_model="gpt-4",
                              baseline_model=baseline, model_list=None)
    show_result.print = lambda *a, **k: printed.append(a[0] if a else None)  # module-level: shadows the builtin
    try:
        show_result.display_result_pairwise(args)
    finally:
        del show_result.print
    return printed[-1].to_dict(orient="index")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vicuna80_counting_equals_fastchat_package(seed: int, tmp_path: Path) -> None:
    """Every (g1_winner, g2_winner) pair FastChat can write, shuffled and repeated: our per-question outcome
    and rates (pairwise.fastchat_outcome / fastchat_rates) equal what fschat's show_result.py computes from
    the same judgment rows."""
    import random

    from bench.benchmarks.pairwise import fastchat_outcome, fastchat_rates

    values = ["model_1", "model_2", "tie", "error"]
    rng = random.Random(seed)
    pairs = [(a, b) for a in values for b in values] + [(rng.choice(values), rng.choice(values)) for _ in range(40)]
    rng.shuffle(pairs)
    rows = [{"question_id": i, "model_1": MODEL, "model_2": "gpt-3.5-turbo", "g1_winner": a, "g2_winner": b,
             "judge": ["gpt-4", "pair-v2"], "turn": 1, "tstamp": 0.0} for i, (a, b) in enumerate(pairs)]
    table = fastchat_show_result(jsonl(tmp_path / "gpt-4_pair.jsonl", rows), "gpt-3.5-turbo")[MODEL]
    ours = fastchat_rates(fastchat_outcome(a, b) for a, b in pairs)
    assert (ours["win"], ours["loss"], ours["tie"]) == (table["win"], table["loss"], table["tie"])
    for key in ("win_rate", "loss_rate", "win_rate_adjusted"):
        assert ours[key] == pytest.approx(table[key]), key


# -- LLaVA-Bench ---------------------------------------------------------------------------------------

def llava_set(tmp: Path) -> Path:
    root = tmp / "llava_bench"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(png())
    cats = ["conv", "conv", "detail", "complex"]
    jsonl(root / "questions.jsonl", [{"question_id": k, "image": "a.png", "text": f"LQ{k}?", "category": c}
                                     for k, c in enumerate(cats)])
    jsonl(root / "context.jsonl", [{"id": "a", "image": "a.png", "caption": ["A red square.", "On white."]}])
    jsonl(root / "answers_gpt4.jsonl", [{"question_id": k, "text": f"GPT4-{k}", "answer_id": f"g{k}"}
                                        for k in range(4)])
    return root


@pytest.mark.parametrize("review,pair", [
    ("8 9", [8.0, 9.0]), ("8,9\nbecause", [8.0, 9.0]),     # a comma alone becomes the single space
    ("8.5 10\nwhy", [8.5, 10.0]),
    ("8, 9", [-1, -1]),                                     # comma + space -> three parts
    ("8\t9", [-1, -1]), ("8  9", [-1, -1]), (" 8 9", [-1, -1]), ("8 9 ", [-1, -1]),  # split on one space only
    ("Scores: 8 9", [-1, -1]), ("8 nine", [-1, -1]), ("", [-1, -1]), ("\n8 9", [-1, -1]),
])
def test_llava_bench_parse_score(review: str, pair: list[float]) -> None:
    """LLaVA @ c121f04 llava/eval/eval_gpt_review_bench.py parse_score."""
    assert llava.parse_score(review) == pair


def test_llava_bench_follows_review_and_summary_scripts(tmp_path: Path) -> None:
    """LLaVA @ c121f04: eval_gpt_review_bench.py (content, rule, temperature 0.2, parse_score) and
    summarize_gpt_review.py ([-1, -1] averaged in; means rounded to 3 decimals; round(m/r*100, 1)).

    Tuples: q0 [8, 6]; q1 "8, 9" -> [-1, -1]; q2 "7<TAB>9" -> [-1, -1]; q3 [9, 10].
    all: means (8-1-1+9)/4 = 3.75 and (6-1-1+10)/4 = 3.5 -> 3.5/3.75*100 = 93.33 -> 93.3; x10: 37.5, 35.0.
    conv: (3.5, 2.5) -> 71.4; detail: (-1, -1) -> 100.0 (!); complex: (9, 10) -> 111.1.
    (Dropping the malformed pairs instead would give (8.5, 8.0) -> 94.1.)"""
    root = llava_set(tmp_path)
    ad = get_adapter("llava_bench")
    items = ad.load(root)
    replies = {0: "8 6\nThe second is shorter.", 1: "8, 9\nclose", 2: "7\t9\nhmm", 3: "9 10\nboth good"}
    judge = ScriptedJudge(lambda p, o, n: replies[int(re.search(r"LQ(\d)\?", p)[1])])
    preds = {it.id: f"MODEL-{it.id}" for it in items}
    res = ad.score(items, preds, judge=judge)
    assert res.headline == 93.3
    assert res.breakdown == {"complex": 111.1, "conv": 71.4, "detail": 100.0, "reference_score_x10": 37.5,
                             "model_score_x10": 35.0}
    assert res.counts["unparsable_scored_-1"] == 2 and res.counts["reasks"] == 0
    prompt, opts = judge.calls[0]
    assert prompt == llava.review_content("A red square.\nOn white.", "LQ0?", "GPT4-0", "MODEL-0")
    assert prompt.endswith(f"[System]\n{llava.RULE}\n\n")
    assert (opts["system"], opts["temperature"], opts["max_tokens"]) == (llava.SYSTEM, 0.2, 1024)

    ad.submission_files(items, preds, tmp_path / "sub", MODEL, judged=res.details)
    sub = tmp_path / "sub"
    # eval_gpt_review_bench.py zips questions, GPT-4 answers and our answers line by line
    qs, refs, ours = (read_jsonl(sub / f) for f in ("questions.jsonl", "answers_gpt4.jsonl",
                                                     f"answers/{MODEL}.jsonl"))
    assert [q["question_id"] for q in qs] == [r["question_id"] for r in refs] == [a["question_id"] for a in ours]
    assert all({"question_id", "prompt", "text", "answer_id", "model_id", "metadata"} <= a.keys() for a in ours)
    # summarize_gpt_review.py -f reviews/<model>.jsonl, re-done here by hand
    reviews = read_jsonl(sub / "reviews" / f"{MODEL}.jsonl")
    scores: dict[str, list] = defaultdict(list)
    for r in reviews:
        scores[r["category"]].append(r["tuple"])
        scores["all"].append(r["tuple"])
    stats = [round(sum(t[i] for t in scores["all"]) / len(scores["all"]), 3) for i in (0, 1)]
    assert round(stats[1] / stats[0] * 100, 1) == res.headline
    assert set(scores) == {"all", "llava_bench_conv", "llava_bench_detail", "llava_bench_complex"}


# -- TouchStone ------------------------------------------------------------------------------------------

def touchstone_set(tmp: Path) -> Path:
    import base64

    root = tmp / "touchstone"
    root.mkdir()
    b64 = base64.b64encode(png()).decode()
    (root / "touchstone_20230831.tsv").write_text(
        "index\timage\tquestion\thuman_annotation\tgpt4_ha_answer\tcategory\ttask_name\n"
        f"0\t{b64}\tQT0?\tA red square.\tREF-0\tA\tdescribe\n"
        f"1\t{b64}\tQT1?\tA red square.\tREF-1\tB,C\tpoem\n")
    return root


# (item, round) -> replies to the 1st, 2nd, ... request; round1 shows GPT-4 as assistant 1
TOUCHSTONE_REPLIES = {
    (0, 1): ["Seven and five", "7 5"],          # unparsable, re-asked, then model (assistant 2) = 5, ref = 7
    (0, 2): ["6 8"],                            # model (assistant 1) = 6, ref = 8
    (1, 1): ["7  5"] * 5,                       # double space: unparsable 5 times -> (0, 0, "error"), skipped
    (1, 2): [RuntimeError("judge down"), "9 4"],  # a failed request counts as one of the five; model = 9, ref = 4
}


def touchstone_script(prompt: str, options: dict, n: int):
    item = int(re.search(r"QT(\d)\?", prompt)[1])
    rnd = 1 if "[The Start of Assistant 1's Answer]\nREF" in prompt else 2
    return TOUCHSTONE_REPLIES[(item, rnd)][n]


def test_touchstone_follows_eval_py(tmp_path: Path) -> None:
    """OFA-Sys/TouchStone @ 3d85f92 eval.py: process (both rounds), evaluate (process_reply on reply +
    '\\nok', up to MAX_API_RETRY = 5 requests, then (0, 0, "error")), compute_score (error rounds left
    out, np.mean * 100 per model and per category split on ',').

    Model scores kept: 5 (item 0 round 1), 6 (item 0 round 2), 9 (item 1 round 2) -> mean 20/3*100 = 666.67;
    A: (5+6)/2*100 = 550; B = C = 900. GPT-4: 7, 8, 4 -> 633.33. Requests 2+1+5+2 = 10, re-asks 6."""
    ad = get_adapter("touchstone")
    items = ad.load(touchstone_set(tmp_path))
    judge = ScriptedJudge(touchstone_script)
    preds = {"0": "MODEL-0", "1": "NA"}  # pandas reads "NA" as missing: eval.py's prompt says "nan"
    res = ad.score(items, preds, judge=judge)
    assert res.headline == pytest.approx(2000 / 3)
    assert res.breakdown == {"A": pytest.approx(550.0), "B": pytest.approx(900.0), "C": pytest.approx(900.0)}
    assert res.details["reference_gpt4_ha_score"] == pytest.approx(1900 / 3)
    c = res.counts
    assert (c["rounds"], c["error_rounds"], c["requests"], c["reasks"], c["judge_errors"]) == (4, 1, 10, 6, 1)
    for prompt, opts in judge.calls:
        assert (opts["system"], opts["temperature"], opts["stop"]) == (touchstone.SYSTEM, 0.0, ["\n"])
        assert prompt.endswith(f"[System]\n{touchstone.PROMPT}\n\n")
    assert "[The Start of Assistant 2's Answer]\nnan\n" in next(p for p, _ in judge.calls if "QT1?" in p)
    assert [r["attempt"] for r in res.details["judgments"] if r["id"] == "1" and r["order"] == "round1"] == [0, 1, 2, 3, 4]

    ad.submission_files(items, preds, tmp_path / "sub", MODEL, judged=res.details)
    import pandas as pd

    df = pd.read_csv(tmp_path / "sub" / f"{MODEL}.tsv", sep="\t")  # how eval.py reads the submit file
    assert {"response", "question", "human_annotation", "gpt4_ha_answer", "category", "task_name"} <= set(df.columns)
    assert df.iloc[0]["response"] == "MODEL-0" and pd.isna(df.iloc[1]["response"])
    # compute_score on the evaluation results file, re-done here
    scores: dict[str, list[float]] = defaultdict(list)
    for row in read_jsonl(tmp_path / "sub" / f"evaluation_results_{MODEL}.jsonl"):
        for rnd in (row["round1"], row["round2"]):
            if rnd["reason"] != "error":
                scores[rnd["model1"]].append(rnd["score1"])
                scores[rnd["model2"]].append(rnd["score2"])
    assert sum(scores[MODEL]) / len(scores[MODEL]) * 100 == pytest.approx(res.headline)
    assert sum(scores["gpt4-ha"]) / len(scores["gpt4-ha"]) * 100 == pytest.approx(1900 / 3)


# -- MLLM-Bench -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply,valid,vote", [
    ("Answer1", True, "answer1"), ("Reasoning.\nAnswer2", True, "answer2"), ("ANSWER1", True, "answer1"),
    ("answer2", True, "answer2"), ("Unable to decide: situation two", True, "unable to decide: situation two"),
    ("Answer2\nAnswer1", True, "answer1"),          # parse_output checks Answer1 first, whatever the order
    ("Answer1.", False, None), (" Answer1", False, None), ("Answer 1", False, None),  # the line must be exact
    ("Final vote: Answer1", False, None), ("[[A]]", False, None), ("Answer1\r", False, None), ("Tie", False, None),
])
def test_mllm_bench_vote_lines(reply: str, valid: bool, vote: str | None) -> None:
    """MLLM-Bench @ 403f82c9 scripts/evaluate.py: main/check (a line, lower-cased, equal to a vote) and
    parse_output's vote priority."""
    assert mllm_valid(reply) is valid
    assert mllm_vote(reply) == vote


def mllm_set(tmp: Path) -> Path:
    root = tmp / "mllm_bench"
    (root / "images").mkdir(parents=True)
    (root / "images" / "0.png").write_bytes(png())
    levels = {1: "L1", 2: "L1", 3: "L1", 4: "L1", 5: "L2", 6: "L2", 7: "L2", 8: "L2"}
    (root / "questions.json").write_text(json.dumps([
        {"id": q, "image_path": "./images/0.png", "question": f"MQ{q}?",
         "meta": {"level": lv, "capability": "x", "url": "", "question type": "open-ended"}} for q, lv in levels.items()]))
    (root / "anchor.json").write_text(json.dumps([
        {"unique_idx": q, "image": "./images/0.png", "question": f"MQ{q}?", "gen_model_id": "llava-v1.5-13b",
         "prompt": f"MQ{q}?", "answer": f"ANCHOR-{q}"} for q in levels]))
    return root


# question -> (replies for <id>_1 (anchor = Answer1), replies for <id>_2 (model = Answer1)), per round
MLLM_REPLIES = {
    1: (["Answer2"], ["Answer1"]),                                     # model, model -> model
    2: (["The first.\nAnswer1"], ["Answer2"]),                         # anchor, anchor -> anchor
    3: (["answer2"], ["unable to decide: situation one"]),             # model + unable -> model
    4: (["Answer1.", "Answer2\nAnswer1"], ["Answer1"]),                # re-asked once; anchor + model -> tie
    5: (["unable to decide: situation one"], ["Unable to decide: situation two"]),  # -> "unable to decide"
    6: (["Answer2"], ["[[A]]", "Answer 1", " Answer1"]),               # no vote in 3 rounds -> dropped
    8: (["unable to decide: situation one"], ["unable to decide: situation one"]),  # -> situation one
}


def mllm_script(prompt: str, options: dict, n: int):
    q = int(re.search(r"MQ(\d)\?", prompt)[1])
    first = f"~~~Answer1\nANCHOR-{q}\n" in prompt
    return MLLM_REPLIES[q][0 if first else 1][n]


def test_mllm_bench_follows_evaluate_py(tmp_path: Path) -> None:
    """MLLM-Bench @ 403f82c9: arrange_data_for_eval.py (prompt, both orders, questions both models
    answered), evaluate.py (text + image, temperature 0.5, ambiguous replies re-asked for up to 3 rounds,
    parse_output's categories, questions without two votes dropped from every count and the total).

    Question 7 has no model answer (not judged); question 6 never gets its second vote (dropped).
    Categories: model = q1, q3 -> 2; anchor = q2; tie = q4; unable to decide = q5; situation one = q8;
    total 6 -> win rate 2/6 = 33.3 %. L1 (q1-q4): model, anchor, model, tie -> 2/4 = 50 %; L2: q5, q8 -> 0 %.
    Requests: 7 questions x 2 = 14, + 1 re-ask (q4) + 2 re-asks (q6) = 17."""
    root = mllm_set(tmp_path)
    ad = get_adapter("mllm_bench")
    items = ad.load(root)
    preds = {it.id: f"MODEL-{it.id}" for it in items if it.id != "7"}
    judge = ScriptedJudge(mllm_script)
    res = ad.score(items, preds, judge=judge)
    assert res.headline == pytest.approx(100 * 2 / 6)
    assert res.details["vote_counts"] == {"model": 2, "anchor": 1, "unable to decide: situation one": 1,
                                          "unable to decide: situation two": 0, "unable to decide": 1, "tie": 1,
                                          "total": 6}
    assert res.breakdown == {"L1": 50.0, "L2": 0.0}
    assert res.details["level_win_tie_lose"] == {"L1": {"win": 2, "tie": 1, "lose": 1}, "L2": {"win": 0, "tie": 2, "lose": 0}}
    c = res.counts
    assert (c["requests"], c["reasks"], c["dropped_missing_vote"], c["missing_prediction"]) == (17, 3, 1, 1)
    assert c["unanswered_requests"] == 1 and (c["wins"], c["losses"]) == (2, 1)
    prompt, opts = judge.calls[0]
    assert prompt == mllm.GPT4V_ROLE + mllm.GPT4V_EVAL_TEMPLATE.format(
        question="MQ1?", question_type="open-ended", answer1="ANCHOR-1", answer2="MODEL-1")
    assert opts.get("system") is None and (opts["temperature"], opts["max_tokens"]) == (0.5, 4096)
    assert opts["image"] == items[0].image
    assert [r["attempt"] for r in res.details["judgments"] if r["id"] == "6" and r["order"] == "2"] == [0, 1, 2]

    ad.submission_files(items, preds, tmp_path / "sub", MODEL, judged=res.details)
    answers = json.loads((tmp_path / "sub" / f"{MODEL}.json").read_text())  # data/anchor.json's format
    assert [a["unique_idx"] for a in answers] == [1, 2, 3, 4, 5, 6, 8]
    assert all({"unique_idx", "gen_model_id", "answer"} <= a.keys() for a in answers)
    # parse_output on the merged success file, re-done here (votes are model names)
    votes: dict[str, list[str]] = defaultdict(list)
    for s in json.loads((tmp_path / "sub" / "sample_output_success.json").read_text()):
        lines = [x.lower() for x in s["answer"].split("\n")]
        pick = next(v for v in ("answer1", "answer2", "unable to decide: situation one",
                                "unable to decide: situation two") if v in lines)
        votes[s["unique_idx"].split("_")[0]].append(
            {"answer1": s["model_1"], "answer2": s["model_2"]}.get(pick, pick))
    full = {k: v for k, v in votes.items() if len(v) == 2}
    assert len(full) == 6 and sum(1 for v in full.values() if v == [MODEL, MODEL]) == 1  # q1 (q3 is model+unable)


# -- MM-Vet ------------------------------------------------------------------------------------------------

def test_mmvet_follows_the_evaluator_loop() -> None:
    """MM-Vet @ acde843 mm-vet_evaluator.py: first token of the reply as a float in [0, 1]; otherwise
    re-ask with the suffix, temperature 0.0 then +0.5 each time; after the 5th re-ask the score is 0 and
    that reply is not read. v1 0.8; v2 gives up (its last reply "1.0" is ignored) -> 0; v3 "1.2" is out of
    range, one re-ask -> 0.5. Total = (0.8 + 0 + 0.5)/3 = 43.33; re-asks 5 + 1 = 6."""
    items = [Item(id=f"v{k}", prompt=f"VQ{k}", meta={"question": f"VQ{k}", "answer": "cat", "capability": ["rec"],
                                                      "record": {}}) for k in (1, 2, 3)]
    # (first reply, replies to the re-asks, which all carry the same text with the suffix)
    replies = {"VQ1": (["0.8"], []), "VQ2": (["n/a"], ["x", "y", "z", "w", "1.0"]), "VQ3": (["1.2"], ["0.5"])}
    judge = ScriptedJudge(lambda p, o, n: replies[re.search(r"\n(VQ\d) \|", p)[1]][p.endswith(mmvet.REASK_SUFFIX)][n])
    res = get_adapter("mmvet").score(items, {it.id: "a cat" for it in items}, judge=judge)
    assert res.headline == pytest.approx(130 / 3)
    assert (res.counts["reasks"], res.counts["unparsable_gave_0"], res.counts["requests"]) == (6, 1, 9)
    v2 = [(p.endswith(mmvet.REASK_SUFFIX), o["temperature"], o["max_tokens"]) for p, o in judge.calls if "VQ2" in p]
    assert v2 == [(False, 0.0, 3), (True, 0.0, 3), (True, 0.5, 3), (True, 1.0, 3), (True, 1.5, 3), (True, 2.0, 3)]
    assert mmvet.parse_grade("0.8 because") == 0.8 and mmvet.parse_grade("1.2") is None
    assert mmvet.parse_grade("nan") != mmvet.parse_grade("nan")  # NaN passes the evaluator's range test


def test_mmvet_results_file(tmp_path: Path) -> None:
    """The results JSON mm-vet_evaluator.py --result_file reads: {id: answer} for every id of mm-vet.json."""
    ad = get_adapter("mmvet")
    items = ad.load(DATA / "mmvet")
    ad.submission_files(items, {"v1": "red", "v2": "blue"}, tmp_path, MODEL)
    results = json.loads((tmp_path / f"{MODEL}.json").read_text())
    meta = json.loads((tmp_path / "mm-vet.json").read_text())
    assert results == {"v1": "red", "v2": "blue"} and set(meta) == set(results)
    assert meta["v2"]["answer"] == "blue<OR>navy"


# -- EMT -------------------------------------------------------------------------------------------------

def test_emt_rule_and_its_stated_assumptions(tmp_path: Path) -> None:
    """EMT (arXiv:2309.10313): accuracy per dataset from a judge's correct/incorrect decision. The check
    prompt and re-ask rule are ours (no official code found) and say so in their version. d1: yes, no ->
    50 %; d2: "maybe" three times -> wrong -> 0 %; headline = mean of the datasets = 25 %."""
    for ds, cls in (("d1", "cat"), ("d1", "dog"), ("d2", "cat")):
        (tmp_path / ds / cls).mkdir(parents=True, exist_ok=True)
        (tmp_path / ds / cls / "0.png").write_bytes(png())
    ad = get_adapter("emt")
    items = ad.load(tmp_path)
    replies = {"d1/cat": "Yes.", "d1/dog": "no", "d2/cat": "maybe"}
    judge = ScriptedJudge(lambda p, o, n: next(r for k, r in replies.items() if f"ITEM {k}" in p))
    res = ad.score(items, {it.id: f"ITEM {it.meta['dataset']}/{it.meta['label']}" for it in items}, judge=judge)
    assert res.breakdown == {"d1": 50.0, "d2": 0.0} and res.headline == 25.0
    assert res.counts["reasks"] == 2 and res.counts["unparsable"] == 1
    assert res.prompt_version == EMT_VERSION and "unofficial" in EMT_VERSION
    assert [o["temperature"] for p, o in judge.calls if "d2/cat" in p] == [0.0, 0.5, 1.0]


# -- MME ----------------------------------------------------------------------------------------------------

def official_mme_score(lines: list[str]) -> tuple[float, int]:
    """eval_tool/calculation.py on one subtask file, re-done here: pairs of lines, 4 tab fields, lower-cased,
    exact yes/no else yes/no within the first 4 characters; 100*acc + 100*acc+."""
    right = plus = total = 0
    for k in range(0, len(lines), 2):
        ok = 0
        for line in lines[k:k + 2]:
            _img, _q, gt, pred = line.split("\t")
            gt, pred = gt.lower(), pred.lower()
            label = pred if pred in ("yes", "no") else "yes" if "yes" in pred[:4] else "no" if "no" in pred[:4] else "other"
            ok += label == gt
            total += 1
        right += ok
        plus += ok == 2
    return 100 * right / total + 100 * plus / (len(lines) // 2), len(lines)


def test_mme_results_files_score_as_calculation_py(tmp_path: Path) -> None:
    """MME eval_tool (Awesome-Multimodal-LLM Evaluation branch): Your_Results/<subtask>.txt,
    image<TAB>question<TAB>GT<TAB>answer. Newlines are deleted (readme.txt), tabs made spaces; the file
    scores what the adapter scores: existence 75 + 50 = 125 ("n\\no" -> "no" right, "maybe" other),
    code_reasoning 200."""
    ad = get_adapter("mme")
    items = ad.load(DATA / "mme")
    answers = iter(["Yes, there is", "n\no", "yes\tit is", "maybe", "Yes", "No"])
    preds = {it.id: next(answers) for it in items}
    res = ad.score(items, preds)
    assert res.breakdown["existence"] == pytest.approx(125.0) and res.breakdown["code_reasoning"] == 200.0
    paths = ad.submission_files(items, preds, tmp_path, MODEL)
    assert [p.name for p in paths] == ["existence.txt", "code_reasoning.txt"]
    for path in paths:
        lines = path.read_text().splitlines(keepends=True)
        assert all(len(line.split("\t")) == 4 and line.endswith("\n") for line in lines)
        score, n = official_mme_score([line.rstrip("\n") + "\n" for line in lines])
        assert score == pytest.approx(res.breakdown[path.stem]) and n % 2 == 0
    first = (tmp_path / "Your_Results" / "existence.txt").read_text().splitlines()[0].split("\t")
    assert first[:3] == ["a.png", "Is there a red square? Please answer yes or no.", "Yes"]


# -- MMBench ----------------------------------------------------------------------------------------------

def test_mmbench_submission_spreadsheet(tmp_path: Path) -> None:
    """LLaVA @ c121f04 scripts/convert_mmbench_for_submission.py: the TSV's columns less hint, category,
    source, image, comment, l2-category, with 'prediction' inserted as the 7th column (raw answers)."""
    ad = get_adapter("mmbench")
    items = ad.load(DATA / "mmbench")
    preds = {"0": "A", "1000000": "The answer is D", "1": "circle", "1000001": "A"}
    [path] = ad.submission_files(items, preds, tmp_path, MODEL)
    assert path.name == f"{MODEL}.xlsx"
    # read back as the evaluators do: MMBench's tools (VLMEvalKit / OpenCompass) load it with pandas.read_excel,
    # whose .xlsx engine is openpyxl (both in the dev extra), not with this project's own reader
    import pandas as pd

    df = pd.read_excel(path, engine="openpyxl")
    assert list(df.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer"]
    assert df["index"].tolist() == [0, 1000000, 1, 1000001]
    assert df.loc[1, "prediction"] == "The answer is D" and df.loc[0, "A"] == "red"
    assert df["prediction"].tolist() == ["A", "The answer is D", "circle", "A"]
    assert pd.isna(df.loc[2, "C"]) and pd.isna(df.loc[2, "D"])  # base 1 has options A, B only: empty cells
    assert read_xlsx(path)[0] == list(df.columns)  # the project's reader (used without openpyxl) agrees


def test_xlsx_column_letters() -> None:
    assert [column_letter(i) for i in (0, 25, 26, 27, 701, 702)] == ["A", "Z", "AA", "AB", "ZZ", "AAA"]


# -- SEED, TextVQA, GQA, MMMU ------------------------------------------------------------------------------

def test_seed_upload_file(tmp_path: Path) -> None:
    """LLaVA convert_seed_for_submission.py: {"question_id", "prediction"} per line, question ids as in the file."""
    ad = get_adapter("seed")
    items = ad.load(DATA / "seed")
    [path] = ad.submission_files(items, {"101": "A", "102": "B"}, tmp_path, MODEL)
    rows = read_jsonl(path)
    assert rows == [{"question_id": "101", "prediction": "A"}, {"question_id": "102", "prediction": "B"}]
    answers = {it.meta["question_id"]: it.meta["answer"] for it in items}
    acc = 100 * sum(r["prediction"] == answers[r["question_id"]] for r in rows) / len(rows)
    assert acc == ad.score(items, {"101": "A", "102": "B"}).headline == 50.0


def test_textvqa_files(tmp_path: Path) -> None:
    """EvalAI upload [{"question_id": int, "answer": str}] and LLaVA eval_textvqa.py's answer file, whose
    (question_id = image id, question from the prompt's first line, lower-cased) keys the annotations."""
    ad = get_adapter("textvqa")
    items = ad.load(DATA / "textvqa")
    preds = {"1": "Nokia", "2": "3"}
    evalai, llava_file = ad.submission_files(items, preds, tmp_path, MODEL)
    assert json.loads(evalai.read_text()) == [{"question_id": 1, "answer": "Nokia"}, {"question_id": 2, "answer": "3"}]
    annotations = {(a["image_id"], a["question"].lower()) for a in
                   json.loads((DATA / "textvqa" / "TextVQA_0.5.1_val.json").read_text())["data"]}
    for row in read_jsonl(llava_file):
        lines = row["prompt"].split("\n")
        assert len(lines) in (2, 3) and (len(lines) == 2 or lines[1].startswith("Reference OCR token: "))
        assert (row["question_id"], lines[0].lower()) in annotations


def test_gqa_predictions_file(tmp_path: Path) -> None:
    """LLaVA convert_gqa_for_eval.py: [{"questionId", "prediction": text.rstrip('.').lower()}], compared
    exactly with the answer by GQA's eval.py."""
    ad = get_adapter("gqa")
    items = ad.load(DATA / "gqa")
    preds = {"q1": "Red.", "q2": "Yes"}
    path, questions = ad.submission_files(items, preds, tmp_path, MODEL)
    rows = json.loads(path.read_text())
    assert rows == [{"questionId": "q1", "prediction": "red"}, {"questionId": "q2", "prediction": "yes"}]
    assert set(json.loads(questions.read_text())) == {r["questionId"] for r in rows}
    gold = {it.id: it.meta["answer"] for it in items}
    assert 100 * sum(r["prediction"] == gold[r["questionId"]] for r in rows) / 2 == ad.score(items, preds).headline


def test_mmmu_eval_only_file(tmp_path: Path) -> None:
    """MMMU main_eval_only.py: {id: letter} for multiple choice (our parse, seeded fallback included),
    the raw answer for open questions."""
    ad = get_adapter("mmmu")
    items = ad.load(DATA / "mmmu")
    preds = {"validation_Art_1": "(A) red", "validation_Math_1": "The answer is 4", "validation_Math_2": "hmm"}
    [path] = ad.submission_files(items, preds, tmp_path, MODEL)
    out = json.loads(path.read_text())
    assert out["validation_Art_1"] == "A" and out["validation_Math_1"] == "The answer is 4"
    assert out["validation_Math_2"] in ("A", "B")  # the seed-42 random fallback, as in the score


# -- the harness entry point ---------------------------------------------------------------------------------

def test_write_submissions_for_every_variant(tmp_path: Path) -> None:
    """write_submissions(results.json's dict) reloads each benchmark as the run did and writes every variant's
    files; EMT has no official tool outside this project, so nothing for it."""
    preds = {"mme": {}, "mmbench": {"0": "A"}, "seed": {"101": "A"}, "mmvet": {"v1": "red"},
             "mmmu": {"validation_Art_1": "A"}, "textvqa": {"1": "nokia"}, "gqa": {"q1": "red"}, "emt": {},
             "mllm_bench": {"1": "x"}, "touchstone": {"0": "x"}, "llava_bench": {"0": "x"}, "vicuna80": {"1": "x"}}
    results = {"config": {"seed": 0},
               "benchmarks": [{"name": n, "data_root": str(DATA / n), "limit": 8, "status": "ok"}
                              for n in REPORT_BENCHMARKS],
               "variants": [{"name": "gguf:Q4_0", "status": "ok", "predictions": preds, "accuracy": {}},
                            {"name": "gguf:Q8_0", "status": "failed", "predictions": {}}]}
    index = json.loads(write_submissions(results, tmp_path).read_text())
    written = index["variants"]["gguf:Q4_0"]
    assert set(written) == set(REPORT_BENCHMARKS) and "gguf:Q8_0" not in index["variants"]
    assert written["emt"] == []
    assert all(written[n] for n in REPORT_BENCHMARKS if n != "emt")
    assert written["mmbench"] == [f"{model_id('gguf:Q4_0')}/mmbench/gguf_Q4_0.xlsx"]
    assert all((tmp_path / p).is_file() for files in written.values() for p in files)
    assert Counter(p.split("/")[1] for files in written.values() for p in files)["mme"] == 2


def test_judged_review_files_come_through_the_harness_results(tmp_path: Path) -> None:
    """The harness keeps a judged result's details (accuracy.score_suite), so write_submissions can write
    the official review file from results.json alone; the report names judge and prompt version."""
    from bench.harness import accuracy, report
    from bench.harness.suites import Suite

    ad = get_adapter("llava_bench")
    suite = Suite("llava_bench", ad, items=ad.load(DATA / "llava_bench"), data_root=str(DATA / "llava_bench"), limit=8)
    judge = ScriptedJudge(lambda p, o, n: "8 6\nfine")
    entry = accuracy.score_suite(suite, {"0": "a", "1": "b"}, judge)
    assert entry["headline"] == 75.0 and entry["prompt_version"] == llava.PROMPT_VERSION
    results = {"config": {"seed": 0}, "benchmarks": [{**suite.to_dict(), "status": "ok"}],
               "variants": [{"name": "gguf:Q4_0", "status": "ok", "predictions": {"llava_bench": {"0": "a", "1": "b"}},
                             "accuracy": {"llava_bench": json.loads(json.dumps(entry))}}]}
    index = json.loads(write_submissions(results, tmp_path).read_text())
    assert "gguf_Q4_0/llava_bench/reviews/gguf_Q4_0.jsonl" in index["variants"]["gguf:Q4_0"]["llava_bench"]
    assert [r["tuple"] for r in read_jsonl(tmp_path / "gguf_Q4_0/llava_bench/reviews/gguf_Q4_0.jsonl")] == [[8, 6]] * 2
    assert report._judge_cell(results, "llava_bench") == f"scripted-judge ({llava.PROMPT_VERSION})"
