"""Shared machinery of the pairwise protocols (Vicuna-80, MLLM-Bench): the baseline answers
file, both-order judging and win-rate aggregation. The tie rule is the protocol's own."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.benchmarks.base import (
    DataFormatError,
    Item,
    JudgedAdapter,
    JudgeLike,
    ScoreResult,
    judge_name,
    pct,
    read_jsonl,
)
from bench.benchmarks.pairwise import ERROR, LOSS, TIE, WIN, model_outcome, parse_ab_verdict


def load_baseline(path: Path, bench: str) -> dict[str, str]:
    """JSONL id -> answer. Accepts {question_id|id, text|answer} and FastChat model_answer rows
    ({question_id, choices: [{turns: [...]}]})."""
    out: dict[str, str] = {}
    for row in read_jsonl(path, bench):
        key = row.get("question_id", row.get("id"))
        if "choices" in row and row["choices"]:
            answer = row["choices"][0].get("turns", [""])[0]
        else:
            answer = row.get("text", row.get("answer"))
        if key is None or answer is None:
            raise DataFormatError(f"{bench}: {path} rows need question_id/id and text/answer")
        out[str(key)] = str(answer)
    return out


class PairwiseAdapter(JudgedAdapter):
    combine: Callable[[str, str], str]
    default_baseline = "baseline_answers.jsonl"

    def baseline_answers(self, items: Sequence[Item]) -> dict[str, str] | None:
        path = self.options.get("baseline") or self.options.get("baseline_path")
        if path is None and items:
            path = Path(items[0].meta["root"]) / self.default_baseline
        if path is None or not Path(path).is_file():
            return None
        return load_baseline(Path(path), self.name)

    def build_query(self, item: Item, answer_a: str, answer_b: str) -> tuple[str, str | None]:
        raise NotImplementedError

    def judge_pair(self, judge: JudgeLike, item: Item, model: str, baseline: str, counts: Counter) -> str:
        outcomes = []
        for model_is_a in (True, False):
            a, b = (model, baseline) if model_is_a else (baseline, model)
            prompt, system = self.build_query(item, a, b)
            try:
                verdict = parse_ab_verdict(judge.ask(prompt, system=system, temperature=0.0, max_tokens=2048,
                                                     image=self.judge_image(item), tag=f"{self.name}:{item.id}"))
            except RuntimeError:
                counts["judge_errors"] += 1
                verdict = ERROR
            counts["unparsable_verdicts"] += verdict == ERROR
            outcomes.append(model_outcome(verdict, model_is_a))
        if outcomes[0] != outcomes[1]:
            counts["order_disagreements"] += 1
        return type(self).combine(outcomes[0], outcomes[1])

    def judge_image(self, item: Item) -> Any:
        return None

    def scorer_name(self) -> str:
        return f"pairwise judge, both orders ({self.rule_name})"

    def score_judged(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike) -> ScoreResult:
        scorer = self.scorer_name()
        baseline = self.baseline_answers(items)
        if baseline is None:
            return self.result(None, status="not scored: no baseline answers file", scorer=scorer,
                               counts={"items": len(items)})
        counts: Counter = Counter(items=len(items))
        results: dict[str, str] = {}
        for it in items:
            if it.id not in baseline:
                counts["missing_baseline"] += 1
                continue
            pred = predictions.get(it.id)
            counts["missing_prediction"] += pred is None
            results[it.id] = self.judge_pair(judge, it, pred or "", baseline[it.id], counts)
        tally = Counter(results.values())
        total = len(results)
        per: dict[str, list[str]] = defaultdict(list)
        for it in items:
            if it.id in results:
                per[it.meta["category"]].append(results[it.id])
        breakdown: dict[str, float | None] = {k: pct(v.count(WIN), len(v)) for k, v in sorted(per.items())}
        breakdown["win_rate_adjusted"] = pct(tally[WIN] + 0.5 * tally[TIE], total)
        counts.update(wins=tally[WIN], losses=tally[LOSS], ties=tally[TIE])
        return self.result(pct(tally[WIN], total), breakdown=breakdown, scorer=scorer, judge=judge_name(judge),
                           counts=dict(counts))

    rule_name = ""
