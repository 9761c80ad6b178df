"""MMMU (val): micro accuracy with the official parsing (``choice.mmmu_*``), per subject and domain.

Official data: the hub dataset ``MMMU/MMMU`` (fields id, question, options, answer, question_type,
image_1..image_7). Locally: a JSON list or JSONL of those records (``options`` a list or its
Python-literal string, ``image_1`` a path relative to the file). Only ``image_1`` is shown, as
LLaVA's single-image evaluation does. Unparsable multiple-choice answers get a random option from
an RNG seeded with 42, consumed in file order (the official script seeds ``random`` with 42 once).
"""

from __future__ import annotations

import ast
import random
from collections.abc import Sequence
from pathlib import Path

from allava.chat import multiple_choice_prompt, short_answer_prompt
from bench.benchmarks.base import (
    Adapter,
    Item,
    JudgeLike,
    ScoreResult,
    hub_unavailable,
    pct,
    read_json,
    read_jsonl,
)
from bench.benchmarks.choice import mmmu_eval_multi_choice, mmmu_eval_open, mmmu_parse_multi_choice, mmmu_parse_open
from bench.benchmarks.registry import register

MMMU_SEED = 42
DOMAINS = {
    "Art and Design": ["Art", "Art_Theory", "Design", "Music"],
    "Business": ["Accounting", "Economics", "Finance", "Manage", "Marketing"],
    "Science": ["Biology", "Chemistry", "Geography", "Math", "Physics"],
    "Health and Medicine": ["Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                            "Pharmacy", "Public_Health"],
    "Humanities and Social Science": ["History", "Literature", "Sociology", "Psychology"],
    "Tech and Engineering": ["Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                             "Energy_and_Power", "Materials", "Mechanical_Engineering"],
}


def subject_of(record_id: str) -> str:
    """'validation_Art_Theory_12' -> 'Art_Theory'."""
    parts = record_id.split("_")
    return "_".join(parts[1:-1]) if len(parts) > 2 else record_id


@register("mmmu")
class MMMU(Adapter):
    description = "MMMU val, official parsing, micro accuracy"

    def read(self, root: Path) -> list[Item]:
        if str(root).startswith(("hub:", "hf:")):
            raise hub_unavailable("mmmu", "MMMU/MMMU")
        path = self.data_file(root, "mmmu_val.jsonl", "mmmu_val.json")
        records = read_jsonl(path, self.name) if path.suffix == ".jsonl" else read_json(path, self.name)
        self.check_format(path, isinstance(records, list), "must hold a list of MMMU records")
        items = []
        for r in records:
            try:
                rid, qtype, answer = str(r["id"]), r["question_type"], r["answer"]
                options = r.get("options") or []
                options = ast.literal_eval(options) if isinstance(options, str) else list(options)
            except (KeyError, ValueError, SyntaxError, TypeError):
                self.skip("bad_row", f"record {r.get('id') if isinstance(r, dict) else r!r} lacks MMMU fields")
                continue
            image = self.find_image([path.parent / str(r["image_1"])] if r.get("image_1") else [],
                                    f"{rid}: {r.get('image_1')!r}")
            if image is None:
                continue
            subject = subject_of(rid)
            if qtype == "multiple-choice":
                prompt = multiple_choice_prompt(r["question"], [str(o) for o in options])
            else:
                prompt = short_answer_prompt(r["question"])
            items.append(Item(id=rid, prompt=prompt, image=image, stratum=subject,
                              meta={"question_type": qtype, "answer": answer, "options": [str(o) for o in options],
                                    "subject": subject}))
        return items

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        rng = random.Random(MMMU_SEED)  # consumed in item order, as the official script does
        guessed = 0

        def check(it: Item, pred: str) -> tuple[str, bool]:
            nonlocal guessed
            if it.meta["question_type"] != "multiple-choice":
                return it.meta["subject"], mmmu_eval_open(it.meta["answer"], mmmu_parse_open(pred))
            choices = [chr(ord("A") + i) for i in range(len(it.meta["options"]))]
            letter, was_guess = mmmu_parse_multi_choice(pred, choices, dict(zip(choices, it.meta["options"], strict=True)), rng)
            guessed += was_guess
            return it.meta["subject"], mmmu_eval_multi_choice(it.meta["answer"], letter)

        per, missing = self.tally(items, predictions, check)
        domains: dict[str, float | None] = {}
        for domain, subjects in DOMAINS.items():
            vals = [ok for s in subjects for ok in per.get(s, [])]
            if vals:
                domains[f"domain:{domain}"] = pct(sum(vals), len(vals))
        counts = {"items": len(items), "missing_prediction": missing, "random_fallback": guessed}
        return self.accuracy_result(per, scorer="MMMU eval_utils parsing (seed 42 fallback), micro accuracy",
                                    counts=counts, extra=domains)
