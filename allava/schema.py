"""The ALLaVA-4V data schema: one JSON list of records per file.

A record is ``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}...]}``, as in
the released ALLaVA-4V files (``allava_laion/ALLaVA-Caption-LAION-4V.json`` and friends). Image
records carry exactly one ``<image>`` marker in their first human turn; text-only records (the
Evol-Instruct part) carry none. Extra keys (``caption``, ``url``, ``prompt_id``...) are kept
verbatim so synthesis provenance survives a round trip.

Every error names the file and the record id, because a bad record in a 700k-record file is
otherwise impossible to find.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allava.fileio import write_json_atomic

IMAGE_MARKER = "<image>"
HUMAN = "human"
GPT = "gpt"


class DataError(ValueError):
    """A data file or record is not what the schema expects; the message says where and why."""

    def __init__(self, source: str | Path, record_id: str | None, message: str) -> None:
        self.source = str(source)
        self.record_id = record_id
        where = f"{self.source}" + (f", record {record_id!r}" if record_id is not None else "")
        super().__init__(f"{where}: {message}")


@dataclass
class Turn:
    role: str  # "human" or "gpt"
    value: str


@dataclass
class Record:
    id: str
    conversations: list[Turn]
    image: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_image(self) -> bool:
        return self.image is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.image is not None:
            out["image"] = self.image
        out["conversations"] = [{"from": t.role, "value": t.value} for t in self.conversations]
        out.update(self.extra)
        return out


def parse_record(obj: Any, source: str | Path, index: int) -> Record:
    """Validate one JSON object against the schema and return a :class:`Record`."""
    if not isinstance(obj, dict):
        raise DataError(source, f"#{index}", f"expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    if rid is None:
        raise DataError(source, f"#{index}", "missing field 'id'")
    rid = str(rid)
    image = obj.get("image")
    if image is not None and not isinstance(image, str):
        raise DataError(source, rid, f"field 'image' must be a string path, got {type(image).__name__}")
    convs = obj.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise DataError(source, rid, "field 'conversations' must be a non-empty list")
    turns: list[Turn] = []
    for k, turn in enumerate(convs):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(source, rid, f"conversations[{k}] must be an object with 'from' and 'value'")
        role, value = turn["from"], turn["value"]
        if role not in (HUMAN, GPT):
            raise DataError(source, rid, f"conversations[{k}].from is {role!r}; expected 'human' or 'gpt'")
        if not isinstance(value, str):
            raise DataError(source, rid, f"conversations[{k}].value must be a string")
        expected = HUMAN if k % 2 == 0 else GPT
        if role != expected:
            raise DataError(source, rid, f"conversations[{k}] is from {role!r}; turns must alternate human, gpt")
        turns.append(Turn(role, value))
    if not any(t.role == GPT for t in turns):
        raise DataError(source, rid, "no assistant ('gpt') turn: nothing to train on")
    n_markers = sum(t.value.count(IMAGE_MARKER) for t in turns)
    if image is None and n_markers:
        raise DataError(source, rid, f"text-only record (no 'image') contains {IMAGE_MARKER!r}")
    if image is not None and (n_markers != 1 or IMAGE_MARKER not in turns[0].value):
        raise DataError(
            source, rid, f"image record needs exactly one {IMAGE_MARKER!r}, in the first human turn"
        )
    extra = {k: v for k, v in obj.items() if k not in ("id", "image", "conversations")}
    return Record(id=rid, conversations=turns, image=image, extra=extra)


def load_objects(path: str | Path) -> list[Any]:
    """The raw JSON objects of a JSON (a list) or JSONL file; file-level problems raise :class:`DataError`.

    Separate from :func:`load_records` so readers of other official formats (train/sources.py) share
    the same file checks and messages before adapting each object.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            objs = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            objs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, None, f"malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(objs, list):
        raise DataError(path, None, f"expected a JSON list of records, got {type(objs).__name__}")
    return objs


def load_records(path: str | Path, skip_bad: bool = False) -> tuple[list[Record], list[str]]:
    """Read an ALLaVA-4V JSON (a list) or JSONL file.

    Returns the records and, with ``skip_bad``, the messages of the records that were skipped.
    Without it the first bad record raises :class:`DataError`.
    """
    path = Path(path)
    objs = load_objects(path)
    records: list[Record] = []
    skipped: list[str] = []
    for i, obj in enumerate(objs):
        try:
            records.append(parse_record(obj, path, i))
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
    return records, skipped


def write_records(path: str | Path, records: Iterable[Record]) -> None:
    """Write records as one JSON list, atomically (temp file, then rename)."""
    write_json_atomic(path, [r.to_json() for r in records], indent=1)


def make_record(
    rid: str, turns: list[tuple[str, str]], image: str | None = None, **extra: Any
) -> Record:
    """Build a record from (human, gpt) pairs; puts the image marker on the first question."""
    conversations: list[Turn] = []
    for k, (question, answer) in enumerate(turns):
        if k == 0 and image is not None and IMAGE_MARKER not in question:
            question = f"{IMAGE_MARKER}\n{question}"
        conversations += [Turn(HUMAN, question), Turn(GPT, answer)]
    return Record(id=rid, conversations=conversations, image=image, extra=dict(extra))
