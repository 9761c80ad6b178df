"""MME: yes/no pairs per image, scored as the official ``eval_tool/calculation.py``.

Official files: ``eval_tool/Your_Results/<subtask>.txt`` with ``image<TAB>question<TAB>GT`` lines
(two consecutive lines per image), images under ``MME_Benchmark_release_version/<subtask>/``
(directly or in ``images/``). Score per subtask = 100*acc + 100*acc+ (both questions of an image
right); perception = sum of 10 subtasks (max 2000), cognition = sum of 4 (max 800). The headline
is perception, as LLaVA-style tables quote it; both sums and every subtask are in the breakdown.
Pairs are consecutive lines, as the official script chunks them. The tool reads one line per
answer (``eval_tool/readme.txt``: delete the newlines of a response), so an answer is scored as the
line ``submission_files`` writes for it (``one_line``: newlines deleted, tabs made spaces).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from allava.chat import short_answer_prompt
from bench.benchmarks.base import Adapter, DataFormatError, Item, JudgeLike, ScoreResult
from bench.benchmarks.registry import register

PERCEPTION = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR"]
COGNITION = ["commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"]


def one_line(answer: str) -> str:
    """The answer as it goes into ``<subtask>.txt``: newlines deleted (eval_tool/readme.txt), tabs
    made spaces (a tab would split the line into more than the 4 fields calculation.py unpacks)."""
    return answer.replace("\r", "").replace("\n", "").replace("\t", " ")


def parse_pred_ans(pred_ans: str) -> str:
    """calculation.py ``parse_pred_ans`` on the lower-cased prediction: exact yes/no, else 'yes'
    then 'no' searched in the first 4 characters, else 'other'."""
    if pred_ans in ("yes", "no"):
        return pred_ans
    prefix = pred_ans[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def subtask_score(pairs: Sequence[Sequence[tuple[str, str]]]) -> tuple[float, float, float, int]:
    """(score, acc, acc+, other answers) for a subtask given [(gt, raw prediction), x2] per image."""
    correct = plus = other = total = 0
    for pair in pairs:
        right = 0
        for gt, pred in pair:
            label = parse_pred_ans(one_line(pred).lower())
            total += 1
            right += int(label == gt.lower())
            other += int(label == "other")
        correct += right
        plus += int(right == 2)
    acc = correct / total if total else 0.0
    acc_plus = plus / len(pairs) if pairs else 0.0
    return 100 * acc + 100 * acc_plus, acc, acc_plus, other


@register("mme")
class MME(Adapter):
    description = "MME yes/no pairs; acc + acc+ per subtask; perception and cognition sums"

    def read(self, root: Path) -> list[Item]:
        txt_dir = next((d for d in (root / "eval_tool" / "Your_Results", root / "Your_Results", root) if d.is_dir()
                        and any((d / f"{s}.txt").is_file() for s in PERCEPTION + COGNITION)), None)
        if txt_dir is None:
            raise DataFormatError(f"mme: no <subtask>.txt files (image<TAB>question<TAB>GT) under {root}")
        image_root = root / "MME_Benchmark_release_version" if (root / "MME_Benchmark_release_version").is_dir() else root
        items: list[Item] = []
        for subtask in PERCEPTION + COGNITION:
            path = txt_dir / f"{subtask}.txt"
            if not path.is_file():
                continue
            rows = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) < 3 or parts[2].strip().lower() not in ("yes", "no"):
                    raise DataFormatError(f"mme: {path} line {n} is not image<TAB>question<TAB>yes|no")
                rows.append((n, parts[0].strip(), parts[1].strip(), parts[2].strip()))
            if len(rows) % 2:
                self.skip("unpaired_question", f"{path.name} line {rows[-1][0]} has no partner (official pairs by 2)")
                rows = rows[:-1]
            for k in range(0, len(rows), 2):
                pair = rows[k:k + 2]
                img_name = pair[0][1]
                image = self.find_image([image_root / subtask / "images" / img_name, image_root / subtask / img_name],
                                        f"{subtask}/{img_name}")
                if image is None:
                    continue
                for n, img, question, gt in pair:
                    items.append(Item(id=f"{subtask}/{img}/{n}", prompt=short_answer_prompt(question), image=image,
                                      meta={"subtask": subtask, "gt": gt.lower(), "gt_text": gt, "question": question,
                                            "image_name": img},
                                      stratum=subtask, group=f"{subtask}/{k}"))
        return items

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """``Your_Results/<subtask>.txt`` for the official ``eval_tool/calculation.py --results_dir``:
        ``image<TAB>question<TAB>ground truth<TAB>answer`` per line, the two questions of an image on
        consecutive lines (a missing answer is written empty, which scores as our scorer scores it:
        wrong, "other"). calculation.py opens all 14
        subtask files, so it runs on a full set (``--limit 0``); a subsample writes the subtasks it has."""
        groups: dict[str, list[Item]] = {}
        for it in items:
            groups.setdefault(it.group, []).append(it)
        lines: dict[str, list[str]] = {}
        for members in groups.values():
            if len(members) != 2:
                continue
            for it in members:
                m = it.meta
                lines.setdefault(m["subtask"], []).append(
                    f"{m['image_name']}\t{m['question']}\t{m['gt_text']}\t{one_line(predictions.get(it.id, ''))}\n")
        written = []
        for subtask in PERCEPTION + COGNITION:
            if subtask in lines:
                path = out / "Your_Results" / f"{subtask}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(lines[subtask]), encoding="utf-8")
                written.append(path)
        return written

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        groups: dict[str, list[Item]] = {}
        for it in items:
            groups.setdefault(it.group, []).append(it)
        per_task: dict[str, list[list[tuple[str, str]]]] = {}
        missing = 0
        for members in groups.values():
            pair = []
            for it in members:
                pred = predictions.get(it.id)
                missing += pred is None
                pair.append((it.meta["gt"], pred or ""))
            per_task.setdefault(members[0].meta["subtask"], []).append(pair)
        breakdown: dict[str, float | None] = {}
        other = 0
        for task, pairs in per_task.items():
            s, acc, acc_plus, o = subtask_score(pairs)
            breakdown[task] = s
            other += o
        perception = sum(v for k, v in breakdown.items() if k in PERCEPTION and v is not None)
        cognition = sum(v for k, v in breakdown.items() if k in COGNITION and v is not None)
        breakdown["perception"] = perception
        breakdown["cognition"] = cognition
        if not items:
            return self.result(None, status="not scored: no items", scorer="mme calculation.py")
        return self.result(perception, breakdown=breakdown, scorer="mme calculation.py (acc + acc+)",
                           counts={"items": len(items), "images": len(groups), "missing_prediction": missing,
                                   "other_answers": other},
                           details={"perception_subtasks": [t for t in PERCEPTION if t in per_task],
                                    "cognition_subtasks": [t for t in COGNITION if t in per_task]})
