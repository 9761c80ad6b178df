"""Append-only journal of every response: the durable record that makes reruns resume exactly.

One JSON line per outcome, flushed and fsync'd before the next request is counted as done, so a
crash, Ctrl-C or SIGKILL loses at most the requests in flight. Paid responses are stored raw
(parsing happens when the final files are written), so a parser fix never costs a new call.

Rules on reload: the first ``response`` for a key is final (later ones are ignored, so an
accidental double run cannot duplicate records); ``failed`` outcomes (retries exhausted, HTTP
400...) cost nothing and are tried again on the next run. A torn last line (killed mid-write) is
cut off before appending, so it can never glue onto the next line.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from allava.fileio import disk_full_as

RESPONSE = "response"
FAILED = "failed"


class JournalLocked(Exception):
    pass


@dataclass
class JournalState:
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest failure, if no response
    torn_lines: int = 0

    @property
    def prompt_tokens(self) -> int:
        return sum(e.get("prompt_tokens", 0) for e in self.responses.values())

    @property
    def completion_tokens(self) -> int:
        return sum(e.get("completion_tokens", 0) for e in self.responses.values())

    @property
    def cost(self) -> float:
        return sum(e.get("cost", 0.0) for e in self.responses.values())


def read_journal(path: Path) -> JournalState:
    state = JournalState()
    if not path.is_file():
        return state
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                state.torn_lines += 1
                break
            try:
                entry = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                state.torn_lines += 1
                continue
            key = entry.get("key")
            if not key:
                continue
            if entry.get("status") == RESPONSE:
                if key not in state.responses:
                    state.responses[key] = entry
                    state.failures.pop(key, None)
            elif entry.get("status") == FAILED and key not in state.responses:
                state.failures[key] = entry
    return state


class Journal:
    """The open journal of one output folder; holds an exclusive lock so two runs cannot interleave."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: BinaryIO | None = None
        self._lock: TextIO | None = None

    def open(self) -> JournalState:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = (self.path.parent / ".synth.lock").open("a")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise JournalLocked(f"another synth run is using {self.path.parent}") from None
        self._truncate_torn_tail()
        state = read_journal(self.path)
        return state

    def _truncate_torn_tail(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def append(self, entry: dict[str, Any]) -> None:
        """One line, whole or not at all: a write that fails part-way (a full disk) is cut back to the
        previous line before the error leaves, so the journal stays consistent and a rerun resumes."""
        if self._f is None:
            self._f = self.path.open("ab", buffering=0)
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        start = self._f.seek(0, os.SEEK_END)
        try:
            with disk_full_as(self.path):
                view = memoryview(data)
                while view:
                    view = view[self._f.write(view):]
                os.fsync(self._f.fileno())
        except BaseException:
            os.ftruncate(self._f.fileno(), start)
            raise

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
