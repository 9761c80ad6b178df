"""Vicuna-80: text-only questions, pairwise against a baseline model's answers (a JSONL file),
judged with FastChat's ``pair-v2`` prompt in both orders; disagreement is a tie. Headline = win
rate (wins / total); the adjusted rate (wins + ties/2) / total is in the breakdown.

Official file: ``question.jsonl`` rows ``{question_id, category, turns: [text]}`` (MT-bench style)
or ``{question_id, text, category}`` (original FastChat eval table).
"""

from __future__ import annotations

from pathlib import Path

from bench.benchmarks.base import Item, read_jsonl
from bench.benchmarks.pairwise import PAIR_V2_SYSTEM, PAIR_V2_TEMPLATE, combine_vicuna
from bench.benchmarks.pairwise_adapter import PairwiseAdapter
from bench.benchmarks.registry import register


@register("vicuna80")
class Vicuna80(PairwiseAdapter):
    description = "Vicuna-80, pairwise vs baseline answers (FastChat pair-v2, both orders)"
    combine = staticmethod(combine_vicuna)
    rule_name = "FastChat: disagreement = tie"

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
                              meta={"question": text, "category": cat, "root": str(path.parent)}))
        return items

    def build_query(self, item: Item, answer_a: str, answer_b: str) -> tuple[str, str | None]:
        return PAIR_V2_TEMPLATE.format(question=item.meta["question"], answer_a=answer_a, answer_b=answer_b), PAIR_V2_SYSTEM
