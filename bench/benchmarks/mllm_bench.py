"""MLLM-Bench: 420 image questions, pairwise against anchor answers (a JSONL file), judged by a
vision judge (GPT-4V in the paper) in both orders with the per-sample criteria (``meta``).
Rule: agreeing votes decide; a vote plus an "unable"/tie vote counts for that side; a split is a
tie. Win rate = wins / total, also per level / capability.

Official file: ``questions.json`` = list of ``{id, image_path, question, meta?, level?, capability?}``.
The judge prompt wording below follows the paper's protocol; its exact text is unverified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.benchmarks.base import Item
from bench.benchmarks.pairwise import combine_mllm_bench
from bench.benchmarks.pairwise_adapter import PairwiseAdapter
from bench.benchmarks.registry import register

SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user question about the image displayed below, following the evaluation criteria given. Avoid any positional "
    "biases and do not let response length influence your decision. After a short explanation, output your final "
    'verdict strictly in this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" '
    "if you are unable to decide or they are equally good."
)
TEMPLATE = ("[Evaluation Criteria]\n{criteria}\n\n[User Question]\n{question}\n\n"
            "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
            "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]")


@register("mllm_bench")
class MLLMBench(PairwiseAdapter):
    description = "MLLM-Bench, pairwise vs anchor answers, both orders"
    combine = staticmethod(combine_mllm_bench)
    rule_name = "MLLM-Bench: vote + unable = win, split = tie"

    def read(self, root: Path) -> list[Item]:
        base, data = self.read_json_file(root, "questions.json", "must hold a list of question objects", shape=list)
        items = []
        for _, q in self.complete_rows(enumerate(data), ("id", "image_path", "question"), label="{row!r:.60}"):
            image = self.find_image([base / q["image_path"], base / "images" / q["image_path"]], str(q["image_path"]))
            if image is None:
                continue
            cat = str(q.get("level") or q.get("capability") or "")
            items.append(Item(id=str(q["id"]), prompt=q["question"], image=image, stratum=cat,
                              meta={"question": q["question"], "criteria": q.get("meta") or "", "category": cat,
                                    "root": str(base)}))
        return items

    def build_query(self, item: Item, answer_a: str, answer_b: str) -> tuple[str, str | None]:
        crit = item.meta["criteria"]
        crit = crit if isinstance(crit, str) else str(crit)
        return TEMPLATE.format(criteria=crit, question=item.meta["question"], answer_a=answer_a, answer_b=answer_b), SYSTEM

    def judge_image(self, item: Item) -> Any:
        return item.image
