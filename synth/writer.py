"""Final files from the journal: ALLaVA-4V JSON that ``train/`` reads directly, plus rejects.

Everything here is a pure function of (inputs, journal), so an interrupted-then-resumed run and an
uninterrupted one write the same files. Each file is written atomically; images are hard-linked
(or copied) into ``<output>/images/`` and records point at them relative to the JSON file, which
is where ``train/`` looks by default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allava.fileio import write_text_atomic
from allava.schema import Record, make_record, parse_record, write_records
from synth.inputs import InputReject, Item, link_or_copy
from synth.journal import JournalState
from synth.parsing import Parsed, Rejected, parse_response
from synth.prompts import caption_request_for, caption_requests

DEFAULT_NAMES = {"laion": "LAION", "vflan": "VFLAN", "text": "Evol"}
REJECTS_FILE = "rejects.jsonl"


def output_files(mode: str, name: str) -> dict[str, str]:
    if mode == "text":
        return {"text": f"ALLaVA-Text-{name}.json"}
    return {"caption": f"ALLaVA-Caption-{name}.json", "instruct": f"ALLaVA-Instruct-{name}.json"}


@dataclass
class WriteResult:
    files: dict[str, int] = field(default_factory=dict)  # file name -> records
    accepted: int = 0
    rejected: int = 0
    pending: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)


def _extras(item: Item, entry: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if item.caption:
        extra["caption"] = item.caption
    if item.url:
        extra["url"] = item.url
    extra["source"] = item.source
    extra["prompt_id"] = entry.get("prompt_id")
    extra["model"] = entry.get("model")
    return extra


def records_for(mode: str, item: Item, parsed: Parsed, entry: dict[str, Any], cap_requests: list[str]) -> dict[str, Record]:
    """The records one accepted response yields, by output kind."""
    extra = _extras(item, entry)
    if mode == "text":
        return {"text": make_record(item.key, [(item.instruction or "", parsed.answer)], None, **extra)}
    image = f"images/{item.image_name}"
    cap = make_record(f"cap_{item.key}", [(caption_request_for(item.key, cap_requests), parsed.caption or "")], image, **extra)
    if mode == "laion":
        inst = make_record(
            f"inst_{item.key}", [(parsed.question or "", parsed.answer)], image, **extra, questions=parsed.questions
        )
    else:
        inst_extra = dict(extra, **{k: v for k, v in item.extra.items() if k == "original_answer"})
        inst = make_record(f"inst_{item.key}", [(item.instruction or "", parsed.answer)], image, **inst_extra)
    return {"caption": cap, "instruct": inst}


def _reason_class(reason: str) -> str:
    return reason.split(":", 1)[0].split(" ", 1)[0]


def write_outputs(
    mode: str, name: str, out_dir: Path, items: list[Item], input_rejects: list[InputReject], state: JournalState
) -> WriteResult:
    files = output_files(mode, name)
    by_kind: dict[str, list[Record]] = {k: [] for k in files}
    rejects: list[dict[str, Any]] = []
    result = WriteResult()
    cap_requests = caption_requests()
    for r in input_rejects:
        rejects.append({"key": r.key, "source": r.source, "stage": "input", "reason": r.reason})
    for item in sorted(items, key=lambda i: i.index):
        entry = state.responses.get(item.key)
        if entry is None:
            failure = state.failures.get(item.key)
            if failure is None:
                result.pending += 1
            else:
                rejects.append({"key": item.key, "source": item.source, "stage": "request", "reason": failure["reason"]})
            continue
        try:
            parsed = parse_response(mode, entry.get("text"), entry.get("finish_reason"))
        except Rejected as exc:
            rejects.append(
                {"key": item.key, "source": item.source, "stage": "response", "reason": exc.reason,
                 "prompt_id": entry.get("prompt_id"), "model": entry.get("model"), "text": entry.get("text")}
            )
            continue
        recs = records_for(mode, item, parsed, entry, cap_requests)
        for kind, rec in recs.items():
            parse_record(rec.to_json(), files[kind], 0)  # the schema check train/ will do, done before writing
            by_kind[kind].append(rec)
        if item.image_path is not None and item.image_name:
            link_or_copy(item.image_path, out_dir / "images" / item.image_name)
        result.accepted += 1
    for kind, fname in files.items():
        write_records(out_dir / fname, by_kind[kind])
        result.files[fname] = len(by_kind[kind])
    write_text_atomic(out_dir / REJECTS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    result.rejected = len(rejects)
    for r in rejects:
        c = _reason_class(r["reason"]) if r["stage"] != "input" else "input"
        result.reject_reasons[c] = result.reject_reasons.get(c, 0) + 1
    return result
