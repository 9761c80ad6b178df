"""Vicuna-80: text-only questions, pairwise against a baseline model's answers, scored exactly as
FastChat's ``fastchat/llm_judge`` does in ``--mode pairwise-baseline`` (rules in ``pairwise.py``).

Judging (``gen_judgment.py`` / ``common.py run_judge_pair``, lm-sys/FastChat @ 0e6d3e4b): questions
whose category is in ``NEED_REF_CATS`` (math, reasoning, coding) are judged with the ``pair-math-v1``
prompt and the reference answer ``reference_answer/<judge model>.jsonl``; all others with
``pair-v2``. System prompt as a system message, temperature 0, max_tokens 2048, once with the
model's answer as A (game 1) and once as B (game 2). Counting: ``show_result.py`` (a question with an
"error" verdict in either game is dropped; the rates are over the questions left). Headline = win
rate; the adjusted win rate (ties count half) and the loss rate are in the breakdown.

Official files: ``question.jsonl`` rows ``{question_id, category, turns: [text]}`` (the FastChat
``data/vicuna_bench`` layout; the older ``{question_id, text, category}`` rows are read too), the
baseline's answers (``baseline_answers.jsonl`` or FastChat's ``model_answer/gpt-3.5-turbo.jsonl``,
or ``baseline=<file>``) and, for math/reasoning/coding questions, ``reference_answer/gpt-4.jsonl``.
FastChat looks the reference up under the judge's own model name (only ``gpt-4.jsonl`` is
published): we take ``reference_answer/<judge model>.jsonl`` when it exists, else ``gpt-4.jsonl``,
and name the file used in the result. A question of those categories without a reference is not
judged and counted, and a missing model answer is judged as an empty one (FastChat's
``check_data`` refuses to start in both cases). FastChat never re-asks a judge (its API client
retries a failed call 16 times, then answers "$ERROR$", which counts as an error verdict).
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
    blank_missing,
    judge_name,
    pct,
    read_jsonl,
    stable_id,
    write_jsonl,
)
from bench.benchmarks.pairwise import (
    ERROR,
    NEED_REF_CATS,
    fastchat_outcome,
    fastchat_rates,
    fastchat_verdict,
    fastchat_winners,
)
from bench.benchmarks.pairwise_adapter import PairwiseAdapter, for_copies, load_baseline
from bench.benchmarks.registry import register

# Byte for byte from lm-sys/FastChat fastchat/llm_judge/data/judge_prompts.jsonl @ 0e6d3e4b
# (rows "pair-v2" and "pair-math-v1": system_prompt, prompt_template).
PAIR_V2_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. You should choose the assistant that follows the user's instructions "
    "and answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by "
    "comparing the two responses and provide a short explanation. Avoid any position biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow the length of the "
    "responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as "
    "possible. After providing your explanation, output your final verdict by strictly following this format: "
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
PAIR_V2_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]"
    "\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
PAIR_MATH_V1_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Your evaluation should consider correctness and helpfulness. You will "
    "be given a reference answer, assistant A's answer, and assistant B's answer. Your job is to evaluate which "
    "assistant's answer is better. Begin your evaluation by comparing both assistants' answers with the reference "
    "answer. Identify and correct any mistakes. Avoid any position biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After "
    "providing your explanation, output your final verdict by strictly following this format: \"[[A]]\" if "
    'assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
PAIR_MATH_V1_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]"
    "\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
JUDGE_PROMPTS = {"pair-v2": (PAIR_V2_SYSTEM, PAIR_V2_TEMPLATE), "pair-math-v1": (PAIR_MATH_V1_SYSTEM,
                                                                               PAIR_MATH_V1_TEMPLATE)}
PROMPT_VERSION = "fastchat-llm_judge pair-v2+pair-math-v1 (judge_prompts.jsonl @0e6d3e4b)"
BASELINE_MODEL = "gpt-3.5-turbo"  # gen_judgment.py --baseline-model default
REFERENCE_MODEL = "gpt-4"  # the only published reference_answer/<judge>.jsonl


@register("vicuna80")
class Vicuna80(PairwiseAdapter):
    description = "Vicuna-80, pairwise vs baseline answers (FastChat llm_judge, both orders)"
    scorer = "FastChat llm_judge pairwise-baseline (show_result.py: error games dropped)"
    prompt_version = PROMPT_VERSION
    baseline_files: ClassVar[tuple[str, ...]] = ("baseline_answers.jsonl", f"model_answer/{BASELINE_MODEL}.jsonl")

    def read(self, root: Path) -> list[Item]:
        path = self.data_file(root, "question.jsonl")
        items = []
        for q in read_jsonl(path, self.name):
            text = (q.get("turns") or [None])[0] if "turns" in q else q.get("text")
            if q.get("question_id") is None or not text:
                self.skip("bad_row", f"question {q.get('question_id')!r} lacks question_id/turns")
                continue
            cat = q.get("category", "")
            items.append(Item(id=str(q["question_id"]), prompt=text, image=None, stratum=cat,
                              meta={"question": text, "category": cat, "root": str(path.parent),
                                    "question_id": q["question_id"]}))
        return items

    # -- reference answers (math / reasoning / coding) ------------------------------------------------
    def reference_path(self, items: Sequence[Item], judge: JudgeLike | None) -> Path | None:
        given = self.options.get("reference")
        if given is not None:
            return Path(given) if Path(given).is_file() else None
        if not items:
            return None
        folder = Path(items[0].meta["root"]) / "reference_answer"
        names = [f"{judge_name(judge)}.jsonl"] if judge is not None else []
        return next((folder / n for n in [*names, f"{REFERENCE_MODEL}.jsonl"] if (folder / n).is_file()), None)

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        baseline = self.baseline_answers(items)
        if baseline is None:
            return self.result(None, status="not scored: no baseline answers file", scorer=self.scorer,
                               prompt_version=self.prompt_version, counts={"items": len(items)})
        ref_path = self.reference_path(items, judge)
        refs = for_copies(load_baseline(ref_path, self.name), items) if ref_path else {}
        log = Judgments(self.name, judge, self.prompt_version,
                        {f"{n}:system": s for n, (s, _) in JUDGE_PROMPTS.items()}
                        | {f"{n}:template": t for n, (_, t) in JUDGE_PROMPTS.items()})
        counts: Counter = Counter(items=len(items))
        outcomes: dict[str, str | None] = {}
        for it in items:
            if it.id not in baseline:
                counts["missing_baseline"] += 1
                continue
            math = it.meta["category"] in NEED_REF_CATS
            if math and it.id not in refs:
                counts["missing_reference"] += 1
                continue
            pred = predictions.get(it.id)
            counts["missing_prediction"] += pred is None
            name = "pair-math-v1" if math else "pair-v2"
            system, template = JUDGE_PROMPTS[name]
            extra = {"ref_answer_1": refs[it.id]} if math else {}
            verdicts = []
            for game, (a, b) in (("g1", (pred or "", baseline[it.id])), ("g2", (baseline[it.id], pred or ""))):
                prompt = template.format(question=it.meta["question"], answer_a=a, answer_b=b, **extra)
                reply = log.ask(it.id, prompt, order=game, system=system, temperature=0.0, max_tokens=2048)
                verdicts.append(fastchat_verdict(reply))
                log.note(judge_prompt=name, verdict=verdicts[-1], question_id=it.meta["question_id"])
            g1, g2 = fastchat_winners(*verdicts)
            outcomes[it.id] = outcome = fastchat_outcome(g1, g2)
            counts["error_verdicts"] += verdicts.count(ERROR)
            counts["dropped_error_games"] += outcome is None
            counts["inconsistent"] += outcome is not None and g1 != g2
        rates = fastchat_rates(outcomes.values())
        counts.update(games=rates["games"], wins=rates["win"], losses=rates["loss"], ties=rates["tie"],
                      judge_errors=log.errors, requests=len(log.records), reasks=0)  # FastChat never re-asks
        per: dict[str, list[str]] = defaultdict(list)
        for it in items:
            if outcomes.get(it.id) is not None:
                per[it.meta["category"]].append(outcomes[it.id])  # type: ignore[arg-type]
        breakdown: dict[str, float | None] = {k: pct(v.count("win"), len(v)) for k, v in sorted(per.items())}
        breakdown["win_rate_adjusted"] = None if rates["games"] == 0 else 100 * rates["win_rate_adjusted"]
        breakdown["loss_rate"] = None if rates["games"] == 0 else 100 * rates["loss_rate"]
        status = "ok" if rates["games"] else "not scored: every game has an error verdict"
        return self.result(None if rates["win_rate"] is None else 100 * rates["win_rate"], breakdown=breakdown,
                           scorer=self.scorer, status=status, judge=judge_name(judge), counts=dict(counts),
                           prompt_version=self.prompt_version,
                           details={**log.details(), "reference_file": str(ref_path) if ref_path else None,
                                    "baseline_file": str(self.baseline_path(items))})

    def baseline_model(self, items: Sequence[Item]) -> str:
        """The baseline's model name: FastChat's file stem under ``model_answer/``, else the rows'
        ``model_id``, else "baseline" (``--baseline-model`` for show_result.py)."""
        path = self.baseline_path(items)
        if path is None:
            return "baseline"
        if path.parent.name == "model_answer":
            return path.stem
        rows = read_jsonl(path, self.name)
        return str(rows[0].get("model_id") or "baseline") if rows else "baseline"

    # -- official files -------------------------------------------------------------------------------
    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """FastChat's ``data/<bench>/`` layout: ``question.jsonl``, ``model_answer/<model>.jsonl`` (and the
        baseline's), ``reference_answer/gpt-4.jsonl``, and with a judge ``model_judgment/<judge>_pair.jsonl``,
        so ``gen_judgment.py``/``show_result.py --mode pairwise-baseline`` run on them."""
        answered, predictions = list(items), blank_missing(items, predictions)
        written = [write_jsonl(out / "question.jsonl", [{"question_id": it.meta["question_id"],
                                                         "category": it.meta["category"],
                                                         "turns": [it.meta["question"]]} for it in answered]),
                   write_jsonl(out / "model_answer" / f"{model_id}.jsonl", [fastchat_answer(it, predictions[it.id],
                                                                                            model_id)
                                                                          for it in answered])]
        baseline, base_model = self.baseline_answers(items) or {}, self.baseline_model(items)
        written.append(write_jsonl(out / "model_answer" / f"{base_model}.jsonl",
                                   [fastchat_answer(it, baseline[it.id], base_model) for it in answered
                                    if it.id in baseline]))
        ref_path = self.reference_path(items, None)
        refs = load_baseline(ref_path, self.name) if ref_path else {}
        if refs:
            written.append(write_jsonl(out / "reference_answer" / f"{REFERENCE_MODEL}.jsonl",
                                       [fastchat_answer(it, refs[it.id], REFERENCE_MODEL) for it in answered
                                        if it.id in refs]))
        if judged and judged.get("judgments"):
            games: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
            for r in judged["judgments"]:
                games[r["id"]][r["order"]] = r
            rows = []
            for it in answered:
                g = games.get(it.id)
                if not g or set(g) != {"g1", "g2"}:
                    continue
                w1, w2 = fastchat_winners(g["g1"]["verdict"], g["g2"]["verdict"])
                rows.append({"question_id": it.meta["question_id"], "model_1": model_id, "model_2": base_model,
                             "g1_winner": w1, "g2_winner": w2, "judge": [judged.get("judge"), g["g1"]["judge_prompt"]],
                             "g1_user_prompt": g["g1"]["prompt"], "g1_judgment": g["g1"]["reply"] or "$ERROR$",
                             "g2_user_prompt": g["g2"]["prompt"], "g2_judgment": g["g2"]["reply"] or "$ERROR$",
                             "turn": 1, "tstamp": 0.0})
            written.append(write_jsonl(out / "model_judgment" / f"{judged.get('judge')}_pair.jsonl", rows))
        return written


def fastchat_answer(item: Item, text: str, model_id: str) -> dict[str, Any]:
    """A FastChat ``model_answer`` row (gen_model_answer.py): one choice holding one turn."""
    return {"question_id": item.meta["question_id"], "answer_id": stable_id(model_id, item.id), "model_id": model_id,
            "choices": [{"index": 0, "turns": [text]}], "tstamp": 0.0}
