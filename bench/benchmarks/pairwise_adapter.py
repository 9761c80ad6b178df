"""What the pairwise protocols (Vicuna-80, MLLM-Bench) share: the other model's answers file.

Each protocol's judging and counting is its own (``pairwise.py``, ``vicuna80.py``,
``mllm_bench.py``); only finding and reading the baseline (FastChat) / anchor (MLLM-Bench) answers
is common.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from bench.benchmarks.base import DataFormatError, Item, JudgedAdapter, read_json, read_jsonl


def load_baseline(path: Path, bench: str) -> dict[str, str]:
    """id -> answer from a JSONL file of FastChat ``model_answer`` rows ({question_id, choices:
    [{turns: [...]}]}) or {question_id|id, text|answer} rows, or from a JSON list of MLLM-Bench
    ``data/anchor.json`` rows ({unique_idx, answer, ...})."""
    if path.suffix == ".json":
        rows = read_json(path, bench)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataFormatError(f"{bench}: {path} must be a JSON list of answer objects (MLLM-Bench anchor.json)")
    else:
        rows = read_jsonl(path, bench)
    out: dict[str, str] = {}
    for row in rows:
        key = next((row[k] for k in ("question_id", "unique_idx", "id") if k in row), None)
        if row.get("choices"):
            answer = (row["choices"][0].get("turns") or [None])[0]
        else:
            answer = row.get("text", row.get("answer"))
        if key is None or answer is None:
            raise DataFormatError(f"{bench}: {path} rows need question_id/unique_idx/id and text/answer/choices")
        out[str(key)] = str(answer)
    return out


class PairwiseAdapter(JudgedAdapter):
    """A judged adapter scored against another model's answers (option ``baseline=<file>``, else the
    first of ``baseline_files`` next to the questions)."""

    baseline_files: ClassVar[tuple[str, ...]] = ("baseline_answers.jsonl",)

    def baseline_path(self, items: Sequence[Item]) -> Path | None:
        given = self.options.get("baseline") or self.options.get("baseline_path")
        if given is not None:
            return Path(given) if Path(given).is_file() else None
        if not items:
            return None
        root = Path(items[0].meta["root"])
        return next((root / n for n in self.baseline_files if (root / n).is_file()), None)

    def baseline_answers(self, items: Sequence[Item]) -> dict[str, str] | None:
        path = self.baseline_path(items)
        if path is None:
            return None
        stamp = (str(path), path.stat().st_mtime_ns)
        if getattr(self, "_baseline_read", (None, None))[0] != stamp:  # a bootstrap scores thousands of resamples
            self._baseline_read = (stamp, load_baseline(path, self.name))
        return for_copies(self._baseline_read[1], items)

    def resample_copy(self, item: Item, draw: int) -> Item:
        """The copy remembers its question id: the baseline (and reference) answers are keyed by it."""
        copy = super().resample_copy(item, draw)
        copy.meta = {**item.meta, "resampled_from": item.meta.get("resampled_from", item.id)}
        return copy


def for_copies(answers: dict[str, str], items: Sequence[Item]) -> dict[str, str]:
    """``answers`` (keyed by question id) with each bootstrap copy's id added (``Adapter.resample_copy``),
    so a resampled question finds its baseline answer; unchanged outside a bootstrap."""
    extra = {it.id: answers[it.meta["resampled_from"]] for it in items
             if "resampled_from" in it.meta and it.meta["resampled_from"] in answers}
    return {**answers, **extra} if extra else answers
