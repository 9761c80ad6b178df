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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from allava.chat import multiple_choice_prompt, short_answer_prompt
from bench.benchmarks.base import (
    Adapter,
    Item,
    JudgeLike,
    ScoreResult,
    blank_missing,
    hub_unavailable,
    pct,
    read_json,
    read_jsonl,
    write_json_file,
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

    def parse(self, items: Sequence[Item], predictions: dict[str, str]) -> dict[str, tuple[str | list, bool]]:
        """Each item's parsed answer, in item order (the fixed-seed RNG is consumed in that order, as the
        official script consumes it): a letter for multiple choice (and whether it was the random
        fallback), the parsed candidates for open questions."""
        rng = random.Random(MMMU_SEED)
        out: dict[str, tuple[str | list, bool]] = {}
        for it in items:
            pred = predictions.get(it.id) or ""
            if it.meta["question_type"] != "multiple-choice":
                out[it.id] = (mmmu_parse_open(pred), False)
                continue
            choices = [chr(ord("A") + i) for i in range(len(it.meta["options"]))]
            out[it.id] = mmmu_parse_multi_choice(pred, choices, dict(zip(choices, it.meta["options"], strict=True)), rng)
        return out

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        parsed = self.parse(items, predictions)

        def check(it: Item, pred: str) -> tuple[str, bool]:
            answer, _ = parsed[it.id]
            if it.meta["question_type"] != "multiple-choice":
                return it.meta["subject"], mmmu_eval_open(it.meta["answer"], answer)  # type: ignore[arg-type]
            return it.meta["subject"], mmmu_eval_multi_choice(it.meta["answer"], answer)  # type: ignore[arg-type]

        per, missing = self.tally(items, predictions, check)
        domains: dict[str, float | None] = {}
        for domain, subjects in DOMAINS.items():
            vals = [ok for s in subjects for ok in per.get(s, [])]
            if vals:
                domains[f"domain:{domain}"] = pct(sum(vals), len(vals))
        counts = {"items": len(items), "missing_prediction": missing,
                  "random_fallback": sum(guessed for _, guessed in parsed.values())}
        return self.accuracy_result(per, scorer="MMMU eval_utils parsing (seed 42 fallback), micro accuracy",
                                    counts=counts, extra=domains)

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """``<model>.json`` for MMMU's ``main_eval_only.py --output_path``: ``{id: answer}``, the parsed
        letter for multiple choice (our parse above, random fallback included) and the raw answer for
        open questions (main_eval_only.py parses those itself)."""
        parsed = self.parse(items, predictions)
        preds = blank_missing(items, predictions)
        return [write_json_file(out / f"{model_id}.json",
                                {it.id: parsed[it.id][0] if it.meta["question_type"] == "multiple-choice"
                                 else preds[it.id] for it in items}, indent=2)]
