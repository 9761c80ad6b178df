"""TextVQA (val): VQA accuracy over 10 human answers (see ``vqa_eval``).

Official file: ``TextVQA_0.5.1_val.json`` = ``{"data": [{question_id, image_id, question, answers,
...}]}``; images ``train_images/<image_id>.jpg``. LLaVA-1.5 appends the OCR tokens
("Reference OCR token: ...") when the record has them (``ocr_tokens``); ``use_ocr=False`` turns it off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from allava.chat import short_answer_prompt
from bench.benchmarks.base import (
    Adapter,
    Item,
    JudgeLike,
    ScoreResult,
    blank_missing,
    pct,
    stable_id,
    write_json_file,
    write_jsonl,
)
from bench.benchmarks.registry import register
from bench.benchmarks.vqa_eval import vqa_accuracy


@register("textvqa")
class TextVQA(Adapter):
    description = "TextVQA val, VQA accuracy (10 answers, leave-one-out)"

    def read(self, root: Path) -> list[Item]:
        base, data = self.read_json_file(root, "TextVQA_0.5.1_val.json", list_key="data")
        use_ocr = self.options.get("use_ocr", True)
        items = []
        for q in data["data"]:
            answers = q.get("answers") if isinstance(q, dict) else None
            if not isinstance(answers, list) or len(answers) != 10 or "question" not in q:
                self.skip("bad_row", f"question {q.get('question_id') if isinstance(q, dict) else q!r}: needs 10 answers")
                continue
            image = self.find_image([base / d / f"{q['image_id']}.jpg" for d in ("train_images", "images")]
                                    + [base / d / f"{q['image_id']}.png" for d in ("train_images", "images")],
                                    str(q.get("image_id")))
            if image is None:
                continue
            question = q["question"]
            if use_ocr and q.get("ocr_tokens"):
                question = f"{question}\nReference OCR token: {', '.join(q['ocr_tokens'])}"
            items.append(Item(id=str(q["question_id"]), prompt=short_answer_prompt(question), image=image,
                              meta={"answers": answers, "question_id": q["question_id"], "image_id": q["image_id"]}))
        return items

    def submission_files(self, items: Sequence[Item], predictions: dict[str, str], out: Path, model_id: str,
                         judged: Mapping[str, Any] | None = None) -> list[Path]:
        """``<model>_evalai.json``, the TextVQA EvalAI upload (a list of ``{"question_id": int,
        "answer": str}``, raw answers: the server normalises them), and ``<model>.jsonl`` in
        LLaVA's ``model_vqa_loader.py`` answer format (question_id = the image id, prompt, text), which
        ``llava/eval/eval_textvqa.py --annotation-file TextVQA_0.5.1_val.json --result-file`` scores."""
        preds = blank_missing(items, predictions)
        return [write_json_file(out / f"{model_id}_evalai.json",
                                [{"question_id": qid_int(it.meta["question_id"]), "answer": preds[it.id]} for it in items]),
                write_jsonl(out / f"{model_id}.jsonl",
                            [{"question_id": it.meta["image_id"], "prompt": it.prompt, "text": preds[it.id],
                              "answer_id": stable_id(model_id, it.id), "model_id": model_id, "metadata": {}}
                             for it in items])]

    def item_scores(self, items: Sequence[Item], predictions: dict[str, str]) -> dict[str, float]:
        """Each item's VQA accuracy in [0, 1]; the headline is their mean x 100. The paired bootstrap
        (bench/harness/confidence.py) resamples these instead of re-running the EvalAI normaliser on
        every resample (minutes for thousands of resamples)."""
        return {it.id: vqa_accuracy(predictions.get(it.id, ""), it.meta["answers"]) for it in items}

    def score(self, items: Sequence[Item], predictions: dict[str, str], judge: JudgeLike | None = None) -> ScoreResult:
        missing = sum(1 for it in items if it.id not in predictions)
        total = sum(vqa_accuracy(predictions.get(it.id, ""), it.meta["answers"]) for it in items)
        return self.result(pct(total, len(items)), scorer="VQA accuracy (m4c_evaluator / EvalAI normaliser)",
                           counts={"items": len(items), "missing_prediction": missing})


def qid_int(value: Any) -> Any:
    """EvalAI's TextVQA ``question_id`` is an integer; kept as is when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value
