"""The two pairwise protocols' official rules: FastChat's (Vicuna-80) and MLLM-Bench's.

Both ask the judge twice per question, once with each answer first, but they read and count the
verdicts differently, so each rule below follows its own official script (file and function named
at each rule; the quirks are kept on purpose because they move the numbers).

FastChat ``fastchat/llm_judge`` (lm-sys/FastChat @ 0e6d3e4b):
* ``common.py run_judge_pair``: a judgment containing "[[A]]" is A, else "[[B]]" is B, else
  "[[C]]" is a tie, else "error" (an API failure arrives as the text "$ERROR$", so it is an error too).
* ``common.py play_a_match_pair``: game 1 shows model_1's answer as A, game 2 shows it as B; the
  verdicts are mapped to "model_1"/"model_2" (``g1_map``/``g2_map``). ``gen_judgment.py make_match``
  makes the evaluated model model_1 and the baseline model_2.
* ``show_result.py display_result_pairwise``: a question whose verdict is "error" in either game
  is dropped before counting; otherwise it is a tie when game 1 says tie or the games disagree, else
  the agreed winner wins. win rate = win / (win + loss + tie) over the questions that remain;
  adjusted win rate = (win + tie / 2) / (win + loss + tie).

MLLM-Bench ``scripts/evaluate.py`` (FreedomIntelligence/MLLM-Bench @ 403f82c9):
* ``main``/``check``: a reply counts only when one of its lines, lower-cased, *equals* "answer1",
  "answer2", "unable to decide: situation one" or "unable to decide: situation two" (no stripping);
  any other reply is "ambiguous" and re-requested in the next round (``--max_retry 3`` rounds).
* ``parse_output``: a counted reply votes Answer1, else Answer2, else situation one, else
  situation two (that priority, whatever the line order); a question without exactly two votes is
  left out of every count and of the total; two equal votes give that category; a model vote and an
  "unable" vote give the model; one vote for each model is a "tie"; situation one and two together
  are "unable to decide". total = the sum of the six categories.
"""

from __future__ import annotations

from collections.abc import Iterable

WIN, LOSS, TIE, ERROR = "win", "loss", "tie", "error"

# -- FastChat (Vicuna-80) --------------------------------------------------------------------------
FASTCHAT_API_ERROR = "$ERROR$"  # common.py API_ERROR_OUTPUT: what a judge call that gave up returns
NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")  # common.py: judged with pair-math-v1


def fastchat_verdict(judgment: str | None) -> str:
    """common.py ``run_judge_pair`` ("[[A]]" output format): 'A', 'B', 'tie' or 'error'."""
    judgment = FASTCHAT_API_ERROR if judgment is None else judgment
    if "[[A]]" in judgment:
        return "A"
    if "[[B]]" in judgment:
        return "B"
    if "[[C]]" in judgment:
        return "tie"
    return ERROR


def fastchat_winners(g1_verdict: str, g2_verdict: str) -> tuple[str, str]:
    """common.py ``play_a_match_pair``: (g1_winner, g2_winner) in 'model_1'/'model_2'/'tie'/'error'."""
    g1 = {"A": "model_1", "B": "model_2"}.get(g1_verdict, g1_verdict)
    g2 = {"A": "model_2", "B": "model_1"}.get(g2_verdict, g2_verdict)
    return g1, g2


def fastchat_outcome(g1_winner: str, g2_winner: str) -> str | None:
    """show_result.py ``display_result_pairwise`` for model_1 (the evaluated model): None when the
    question is dropped (an error in either game), else 'win', 'loss' or 'tie'."""
    if g1_winner == ERROR or g2_winner == ERROR:
        return None
    if g1_winner == "tie" or g1_winner != g2_winner:
        return TIE
    return WIN if g1_winner == "model_1" else LOSS


def fastchat_rates(outcomes: Iterable[str | None]) -> dict[str, float | int | None]:
    """show_result.py's counts and rates over the questions that were not dropped."""
    kept = [o for o in outcomes if o is not None]
    win, loss, tie = kept.count(WIN), kept.count(LOSS), kept.count(TIE)
    n = win + loss + tie
    return {"win": win, "loss": loss, "tie": tie, "games": n,
            "win_rate": win / n if n else None, "loss_rate": loss / n if n else None,
            "win_rate_adjusted": (win + 0.5 * tie) / n if n else None}


# -- MLLM-Bench ------------------------------------------------------------------------------------
ANSWER1, ANSWER2 = "answer1", "answer2"
SITUATION_ONE, SITUATION_TWO = "unable to decide: situation one", "unable to decide: situation two"
UNABLE, MLLM_TIE = "unable to decide", "tie"
MODEL, ANCHOR = "model", "anchor"
MLLM_CATEGORIES = (MODEL, ANCHOR, SITUATION_ONE, SITUATION_TWO, UNABLE, MLLM_TIE)  # parse_output's vote_results


def _has_line(reply: str, wanted: tuple[str, ...]) -> bool:
    """evaluate.py ``check``: some line of the reply, lower-cased and not stripped, is one of ``wanted``."""
    return any(line.lower() in wanted for line in reply.split("\n"))


def mllm_valid(reply: str | None) -> bool:
    """evaluate.py ``main``: a 200 reply without a vote line is 'ambiguous' and asked again."""
    return reply is not None and _has_line(reply, (ANSWER1, ANSWER2, SITUATION_ONE, SITUATION_TWO))


def mllm_vote(reply: str | None) -> str | None:
    """evaluate.py ``parse_output``: the reply's vote, by that priority; None when it has none."""
    if reply is None:
        return None
    for vote in (ANSWER1, ANSWER2, SITUATION_ONE, SITUATION_TWO):
        if _has_line(reply, (vote,)):
            return vote
    return None


def mllm_voter(vote: str, anchor_first: bool) -> str:
    """A vote for a position -> for a model: arrange_data_for_eval.py puts model_1 (the anchor, as
    evaluate.sh passes it) as Answer1 in ``<id>_1`` and as Answer2 in ``<id>_2``."""
    if vote == ANSWER1:
        return ANCHOR if anchor_first else MODEL
    if vote == ANSWER2:
        return MODEL if anchor_first else ANCHOR
    return vote


def mllm_outcome(votes: list[str]) -> str | None:
    """evaluate.py ``parse_output``: a question's category from its votes; None (dropped from every
    count and from the total) unless it has exactly two."""
    if len(votes) != 2:
        return None
    if votes[0] == votes[1]:
        return votes[0]
    unable = SITUATION_ONE in votes or SITUATION_TWO in votes
    if MODEL in votes and unable:
        return MODEL
    if ANCHOR in votes and unable:
        return ANCHOR
    if MODEL in votes and ANCHOR in votes:
        return MLLM_TIE
    return UNABLE  # situation one + situation two


def mllm_counts(outcomes: Iterable[str | None]) -> dict[str, int]:
    """parse_output's ``vote_results``: each category's count and their sum as ``total``."""
    kept = [o for o in outcomes if o is not None]
    counts = {c: kept.count(c) for c in MLLM_CATEGORIES}
    counts["total"] = sum(counts.values())
    return counts
