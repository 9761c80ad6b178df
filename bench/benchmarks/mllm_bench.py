"""MLLM-Bench: image questions judged pairwise against an anchor model's answers by a vision judge
(GPT-4V in the paper), scored exactly as FreedomIntelligence/MLLM-Bench's self-evaluation does
(``evaluate.sh`` -> ``scripts/arrange_data_for_eval.py`` -> ``scripts/evaluate.py``, @ 403f82c9).

* ``arrange_data_for_eval.py format_input``: two requests per question, ``<id>_1`` with the anchor
  (model_1) as Answer1 and ``<id>_2`` with it as Answer2; the prompt is ``gpt4v_role`` followed by
  ``gpt4v_eval_template`` filled with the question, its ``meta["question type"]`` and the two
  answers. Only questions both models answered are judged.
* ``evaluate.py request_api``: one user message holding the prompt text and then the image, no
  system message, temperature 0.5, max_tokens 4096. ``main``: a reply without a vote line is
  "ambiguous" and requested again in the next round, up to ``--max_retry 3`` rounds.
* ``evaluate.py parse_output``: votes, categories and the total as in ``pairwise.py``; a question
  missing a vote in either order (never answered validly in three rounds, or not judged at all) is
  left out of every count and of the total.

Headline = the model's wins / total x 100, the README leaderboard's "Win Rates over LLaVA-v1.5-13B";
the counts hold every official category (model, anchor, both "unable" situations, "unable to
decide", "tie", total) and the re-asks; the breakdown gives the win rate per level (the leaderboard's
per-level win/tie/lose, tie = everything neither won nor lost, is in the details). The per-sample
criteria of the paper's leaderboard runs are private; the published self-evaluation prompt is used.

Official files: ``questions.json`` = list of ``{id, image_path, question, meta: {level, capability,
url, "question type"}}``; the anchor's answers ``anchor.json`` (list of ``{unique_idx, answer,
gen_model_id, ...}``), or ``baseline_answers.jsonl`` / ``baseline=<file>``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench.benchmarks.base import (
    Item,
    JudgeLike,
    Judgments,
    ScoreResult,
    judge_name,
    pct,
    read_json,
    read_jsonl,
    write_json_file,
)
from bench.benchmarks.pairwise import (
    ANCHOR,
    MLLM_CATEGORIES,
    MLLM_TIE,
    MODEL,
    mllm_counts,
    mllm_outcome,
    mllm_valid,
    mllm_vote,
    mllm_voter,
)
from bench.benchmarks.pairwise_adapter import PairwiseAdapter
from bench.benchmarks.registry import register

# Byte for byte from FreedomIntelligence/MLLM-Bench scripts/prompts.py @ 403f82c9
# (gpt4v_role, gpt4v_eval_template; arrange_data_for_eval.py imports them as role and template).
GPT4V_ROLE = (
    "### You are an excellent evaluator.\n"
    "### Your assignment involves providing evaluations for given responses.\n"
    "### Each evaluation consists of *an image*, *a question*, a *question type*, and *two corresponding answers*. "
    "Your task is to discern which answer is superior based on the **quality** and its alignment w.r.t the image.\n"
    "### There are only two situations where you may choose 'unable to decide':\n"
    "#### Situation one: The question type is 'close-ended' and both answers are correct or wrong. \n"
    "#### Situation two: Both answers contain considerable factual errors or ethical issues.\n"
    "### Otherwise, you should always choose a better answer by responding 'Answer1' or 'Answer2'.\n"
    "### You should ONLY output your vote 'Answer1', 'Answer2', 'unable to decide: situation one', or "
    "'unable to decide: situation two' in the last line.\n\n"
)
GPT4V_EVAL_TEMPLATE = ("~~~Question\n{question}\n~~~\n~~~Question Type\n{question_type}\n~~~\n~~~Answer1\n{answer1}\n"
                       "~~~\n~~~Answer2\n{answer2}\n~~~")
PROMPT_VERSION = "mllm-bench gpt4v_role+gpt4v_eval_template (scripts/prompts.py @403f82c9)"
MAX_ROUNDS = 3  # evaluate.sh --max_retry 3
ORDERS = (("1", True), ("2", False))  # unique_idx suffix, anchor is Answer1


def judge_prompt(question: str, question_type: str, answer1: str, answer2: str) -> str:
    """arrange_data_for_eval.py: ``system + template.format(...)``."""
    return GPT4V_ROLE + GPT4V_EVAL_TEMPLATE.format(question=question, question_type=question_type,
                                                   answer1=answer1, answer2=answer2)


@register("mllm_bench")
class MLLMBench(PairwiseAdapter):
    description = "MLLM-Bench, pairwise vs anchor answers, both orders (scripts/evaluate.py votes)"
    scorer = "MLLM-Bench evaluate.py votes (3 rounds, questions missing a vote dropped)"
    prompt_version = PROMPT_VERSION
    baseline_files: ClassVar[tuple[str, ...]] = ("anchor.json", "baseline_answers.jsonl")

    def read(self, root: Path) -> list[Item]:
        base, data = self.read_json_file(root, "questions.json", "must hold a list of question objects", shape=list)
        items = []
        for _, q in self.complete_rows(enumerate(data), ("id", "image_path", "question"), label="{row!r:.60}"):
            rel = Path(str(q["image_path"]))
            image = self.find_image([base / rel, base.parent / rel, base / "images" / rel.name], str(rel))
            if image is None:
                continue
            meta = q.get("meta") if isinstance(q.get("meta"), dict) else {}
            level = str(meta.get("level") or q.get("level") or "")
            items.append(Item(id=str(q["id"]), prompt=q["question"], image=image, stratum=level,
                              meta={"question": q["question"], "question_type": str(meta.get("question type", "")),
                                    "category": level, "root": str(base), "record": q}))
        return items

    def anchor_model(self, items: Sequence[Item]) -> str:
        path = self.baseline_path(items)
        if path is None:
            return "anchor"
        rows = read_json(path, self.name) if path.suffix == ".json" else read_jsonl(path, self.name)
        first = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else {}
        return str(first.get("gen_model_id") or first.get("model_id") or "anchor")

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        anchor = self.baseline_answers(items)
        if anchor is None:
            return self.result(None, status="not scored: no anchor answers file", scorer=self.scorer,
                               prompt_version=self.prompt_version, counts={"items": len(items)})
        log = Judgments(self.name, judge, self.prompt_version, {"gpt4v_role": GPT4V_ROLE,
                                                                 "gpt4v_eval_template": GPT4V_EVAL_TEMPLATE})
        counts: Counter = Counter(items=len(items))
        judged = []
        for it in items:  # format_input: only questions both models answered
            if it.id not in anchor:
                counts["missing_anchor"] += 1
            elif it.id not in predictions:
                counts["missing_prediction"] += 1
            else:
                judged.append(it)
        pending = [(it, order, anchor_first) for it in judged for order, anchor_first in ORDERS]
        valid: dict[tuple[str, str], str] = {}
        for rnd in range(MAX_ROUNDS):
            left = []
            for it, order, anchor_first in pending:
                a1, a2 = (anchor[it.id], predictions[it.id]) if anchor_first else (predictions[it.id], anchor[it.id])
                prompt = judge_prompt(it.meta["question"], it.meta["question_type"], a1, a2)
                reply = log.ask(it.id, prompt, order=order, attempt=rnd, temperature=0.5, max_tokens=4096,
                                image=it.image)
                if mllm_valid(reply):
                    vote = mllm_vote(reply)
                    valid[(it.id, order)] = mllm_voter(vote, anchor_first)  # type: ignore[arg-type]
                    log.note(vote=vote, voter=valid[(it.id, order)])
                else:
                    log.note(vote=None, ambiguous=reply is not None)
                    left.append((it, order, anchor_first))
            pending = left
            if not pending:
                break
        outcomes = {it.id: mllm_outcome([valid[(it.id, o)] for o, _ in ORDERS if (it.id, o) in valid])
                    for it in judged}
        tally = mllm_counts(outcomes.values())
        requests = len(log.records)
        counts.update({"requests": requests, "reasks": requests - 2 * len(judged), "unanswered_requests": len(pending),
                       "dropped_missing_vote": sum(o is None for o in outcomes.values()), "judge_errors": log.errors,
                       "wins": tally[MODEL], "losses": tally[ANCHOR]})
        counts.update({f"vote:{k}": v for k, v in tally.items()})
        per_level: dict[str, list[str]] = defaultdict(list)
        for it in judged:
            if outcomes[it.id] is not None:
                per_level[it.meta["category"]].append(outcomes[it.id])  # type: ignore[arg-type]
        breakdown = {k: pct(v.count(MODEL), len(v)) for k, v in sorted(per_level.items())}
        wtl = {k: {"win": v.count(MODEL), "tie": len(v) - v.count(MODEL) - v.count(ANCHOR), "lose": v.count(ANCHOR)}
               for k, v in sorted(per_level.items())}
        status = "ok" if tally["total"] else "not scored: no question has both votes"
        return self.result(pct(tally[MODEL], tally["total"]), breakdown=breakdown, scorer=self.scorer, status=status,
                           judge=judge_name(judge), counts=dict(counts), prompt_version=self.prompt_version,
                           details={**log.details(), "vote_counts": tally, "level_win_tie_lose": wtl,
                                    "categories": list(MLLM_CATEGORIES), "tie_category": MLLM_TIE})

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """``data/<model>.json`` in ``data/anchor.json``'s format (the answers file ``evaluate.sh`` takes as
        model2_path), the ``questions.json`` rows judged, and with a judge the merged
        ``sample_output_success.json`` that ``evaluate.py parse_output`` counts."""
        answered = [it for it in items if it.id in predictions]

        def uid(it: Item) -> Any:
            return it.meta["record"]["id"]

        written = [write_json_file(out / f"{model_id}.json", [
            {"unique_idx": uid(it), "image": str(it.meta["record"]["image_path"]), "question": it.meta["question"],
             "meta": it.meta["record"].get("meta"), "gen_model_id": model_id, "prompt": it.meta["question"],
             "answer": predictions[it.id]} for it in answered], indent=4),
            write_json_file(out / "questions.json", [it.meta["record"] for it in answered], indent=2)]
        if judged and judged.get("judgments"):
            anchor, anchor_name = self.baseline_answers(items) or {}, self.anchor_model(items)
            by_id = {it.id: it for it in answered}
            success = []
            for r in judged["judgments"]:
                it = by_id.get(r["id"])
                if it is None or r.get("vote") is None or it.id not in anchor:
                    continue
                first = r["order"] == "1"
                m1, m2 = (anchor_name, model_id) if first else (model_id, anchor_name)
                a1, a2 = (anchor[it.id], predictions[it.id]) if first else (predictions[it.id], anchor[it.id])
                success.append({"unique_idx": f"{uid(it)}_{r['order']}", "prompt": r["prompt"],
                                "image": str(it.meta["record"]["image_path"]), "model_1": m1, "model_2": m2,
                                "raw_answer1": a1, "raw_answer2": a2, "answer": r["reply"],
                                "gen_model_id": judged.get("judge")})
            written.append(write_json_file(out / "sample_output_success.json", success, indent=4))
        return written
