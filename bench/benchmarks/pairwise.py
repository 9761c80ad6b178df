"""Pairwise judging: verdict parsing and the two protocols' tie rules.

Both protocols ask the judge twice, once with the model as assistant A and once as B.
* Vicuna-80 (FastChat ``llm_judge`` pair-v2): the two verdicts must agree, otherwise the game is
  a tie ("inconsistent"); win rate = wins/total, adjusted = (wins + ties/2)/total.
* MLLM-Bench: agreeing votes decide; a vote for one side plus an "unable"/tie vote counts for that
  side; a split (one vote each way) is a tie.
An unparsable verdict is "error"; it is counted and acts like an abstention (tie) in both rules.
"""

from __future__ import annotations

WIN, LOSS, TIE, ERROR = "win", "loss", "tie", "error"

PAIR_V2_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. You should choose the assistant that follows the user's instructions "
    "and answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by "
    "comparing the two responses and provide a short explanation. Avoid any positional biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow the length of the "
    "responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as "
    "possible. After providing your explanation, output your final verdict by strictly following this format: "
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
PAIR_V2_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]"
    "\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)


def parse_ab_verdict(judgment: str) -> str:
    """FastChat's rule: '[[A]]' -> 'A', else '[[B]]' -> 'B', else '[[C]]' -> 'tie', else 'error'."""
    if "[[A]]" in judgment:
        return "A"
    if "[[B]]" in judgment:
        return "B"
    if "[[C]]" in judgment:
        return "tie"
    return ERROR


def model_outcome(verdict: str, model_is_a: bool) -> str:
    """Translate an A/B verdict into the model's win/loss/tie/error."""
    if verdict in (TIE, ERROR):
        return verdict
    return WIN if (verdict == "A") == model_is_a else LOSS


def combine_vicuna(first: str, second: str) -> str:
    """FastChat both-order rule: agreement decides, disagreement is a tie."""
    if first == second:
        return TIE if first == ERROR else first
    return TIE


def combine_mllm_bench(first: str, second: str) -> str:
    """MLLM-Bench rule: agreeing votes decide; vote + unable = that vote; split = tie."""
    votes = {o for o in (first, second) if o in (WIN, LOSS)}
    if len(votes) == 1:
        return votes.pop()
    return TIE
