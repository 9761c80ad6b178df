"""Data sources in their official release formats, read into ALLaVA-4V records.

ALLaVA-3B's recipe mixes files from four releases. Three of them already use LLaVA's conversation
layout (``{"id", "image"?, "conversations": [{"from", "value"}...]}``), so they go through the same
ALLaVA-4V parser (:func:`allava.schema.parse_record`); only OpenChat's ShareGPT GPT-4 file keeps its
turns under ``items`` and needs a small adapter. The format name is still kept per source, because
each release lays out its images differently (``train/data_catalog.py``) and a report names the
format a bad file was read as.

Bad records are never dropped silently: every malformed record, missing image and over-long record
is counted per source in a :class:`SourceReport`, and :meth:`SourceReport.check` stops the run once
a source's bad share passes the configured ``max_bad_fraction``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allava.schema import DataError, Record, load_objects, parse_record

# how many example messages a report keeps (the counts are always complete)
KEEP_EXAMPLES = 3


def _llava_layout(obj: Any, source: Path, index: int) -> Any:
    """ALLaVA-4V, ShareGPT4V and LLaVA-1.5's mix share LLaVA's record layout.

    One release quirk: Evol-Instruct-GPT4-Turbo-143K names its record id ``idx`` instead of ``id``.
    """
    if isinstance(obj, dict) and "id" not in obj and "idx" in obj:
        obj = {"id": obj["idx"], **{k: v for k, v in obj.items() if k != "idx"}}
    return obj


def _openchat(obj: Any, source: Path, index: int) -> Any:
    """OpenChat's ``sharegpt_gpt4.json``: ShareGPT pages with the turns under ``items`` (text only).

    A record carries ``items`` ([{"from": "human"|"gpt", "value"}...], already starting with a human
    turn and ending with a reply after OpenChat's cleaning), ``model`` ("Model: GPT-4"), ``id`` (the
    ShareGPT page id, sometimes empty) and page fields (``title``, ``views``, ``hash``...).
    """
    if not isinstance(obj, dict):
        return obj
    if "items" not in obj:
        raise DataError(source, f"#{index}", "missing field 'items' (an OpenChat ShareGPT record keeps its turns there)")
    rid = obj.get("id") or f"openchat_{index}"
    extra = {k: obj[k] for k in ("model", "title") if k in obj}
    return {"id": rid, "conversations": obj["items"], **extra}


# format name -> adapter from one raw JSON object to an ALLaVA-4V object
FORMATS: dict[str, Callable[[Any, Path, int], Any]] = {
    "allava": _llava_layout,
    "sharegpt4v": _llava_layout,
    "llava_mix": _llava_layout,
    "openchat": _openchat,
}


def check_format(name: str, where: str) -> None:
    """Config-time check, so an unknown format is one line naming the config entry, not a late crash."""
    if name not in FORMATS:
        raise ValueError(f"{where}: {name!r} is not a known source format; known: {', '.join(sorted(FORMATS))}")


def sniff_format(obj: Any) -> str | None:
    """Which layout a raw object looks like: 'openchat' (items), 'llava' (conversations) or None."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("items"), list):
        return "openchat"
    if isinstance(obj.get("conversations"), list):
        return "llava"
    return None


@dataclass
class SourceReport:
    """Per-source counts of what was read and what was bad, and the first few messages."""

    path: str
    format: str
    records: int = 0  # objects in the file
    malformed: int = 0
    missing_image: int = 0  # not found or not decodable
    too_long: int = 0  # no reply left within max_length, or the cut goes through the image
    examples: list[str] = field(default_factory=list)
    hint: str = ""

    @property
    def bad(self) -> int:
        return self.malformed + self.missing_image + self.too_long

    def add(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < KEEP_EXAMPLES:
            self.examples.append(message)

    def summary(self) -> str:
        """The non-zero counts by kind, e.g. "malformed 2, missing image 1"."""
        kinds = {"malformed": self.malformed, "missing image": self.missing_image, "too long": self.too_long}
        return ", ".join(f"{k} {n}" for k, n in kinds.items() if n) or "none"

    def check(self, max_fraction: float | None) -> None:
        """Stop (one DataError naming the file) when the bad share passes ``max_fraction``.

        ``None`` keeps the strict default (callers raise at the first bad record instead).
        """
        if max_fraction is None or self.records == 0 or self.bad / self.records <= max_fraction:
            return
        first = f"; first: {self.examples[0]}" if self.examples else ""
        hint = f"; {self.hint}" if self.hint else ""
        raise DataError(
            self.path, None,
            f"{self.bad} of {self.records} records bad ({100 * self.bad / self.records:.2f}%), above "
            f"max_bad_fraction {max_fraction:g} ({self.summary()}){hint}{first}",
        )


@dataclass
class SourceRead:
    records: list[Record]
    report: SourceReport
    malformed: list[str] = field(default_factory=list)  # every malformed record's message


def read_source(path: str | Path, fmt: str = "allava", collect: bool = False) -> SourceRead:
    """Read one source file in its official format.

    Without ``collect`` the first malformed record raises (the strict default, same messages as
    :func:`allava.schema.load_records`); with it, malformed records are counted in the report.
    File-level problems (missing file, broken JSON, not a list) always raise.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise DataError(path, None, f"unknown source format {fmt!r}; known: {', '.join(sorted(FORMATS))}")
    adapt = FORMATS[fmt]
    objs = load_objects(path)
    read = SourceRead([], SourceReport(str(path), fmt, records=len(objs)))
    for i, obj in enumerate(objs):
        try:
            read.records.append(parse_record(adapt(obj, path, i), path, i))
        except DataError as exc:
            if not collect:
                raise
            read.report.add("malformed", str(exc))
            read.malformed.append(str(exc))
    if read.malformed:
        read.report.hint = _format_hint(objs, fmt)
    return read


def _format_hint(objs: list[Any], fmt: str) -> str:
    """Say so when the file's records look like another format than the config declares."""
    seen = {sniff_format(o) for o in objs[:100]}
    declared = "openchat" if fmt == "openchat" else "llava"
    if seen == {None}:
        return f"its records match no known format (known: {', '.join(sorted(FORMATS))})"
    other = seen - {declared, None}
    if other and declared not in seen:
        looks = "openchat" if "openchat" in other else "allava/sharegpt4v/llava_mix"
        return f"its records look like the {looks!r} format, the config says {fmt!r}"
    return ""
