"""Prediction cache: a re-run only generates what changed.

Key = sha256(variant file hash, benchmark, item id, full prompt text, max_new_tokens). The variant
hash is over the bytes of the files the runtime reads, so re-exporting or retraining invalidates
exactly the affected entries, while renaming or moving a folder does not. Hashing multi-GB files is
memoised by (path, size, mtime) in the same SQLite file (like lmms-eval's response cache).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from allava.fileio import disk_full_as


def prediction_key(variant_hash: str, benchmark: str, item_id: str, prompt: str, max_new_tokens: int) -> str:
    raw = json.dumps([variant_hash, benchmark, item_id, prompt, max_new_tokens], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


class PredictionCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS preds (key TEXT PRIMARY KEY, variant TEXT, benchmark TEXT, "
                        "item TEXT, text TEXT, token_ids TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS file_hash (path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, "
                        "sha256 TEXT)")
        self.db.commit()

    # -- predictions ------------------------------------------------------------------------------
    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            q = f"SELECT key, text, token_ids FROM preds WHERE key IN ({','.join('?' * len(chunk))})"
            for key, text, ids in self.db.execute(q, chunk):
                out[key] = {"text": text, "token_ids": json.loads(ids)}
        return out

    def put_many(self, rows: list[tuple[str, str, str, str, str, list[int]]]) -> None:
        """rows: (key, variant, benchmark, item id, text, token ids)."""
        with disk_full_as(self.path):  # SQLite rolls the insert back; the cache stays as it was
            self.db.executemany("INSERT OR REPLACE INTO preds VALUES (?, ?, ?, ?, ?, ?)",
                                [(k, v, b, i, t, json.dumps(ids)) for k, v, b, i, t, ids in rows])
            self.db.commit()

    # -- file hashes -------------------------------------------------------------------------------
    def variant_hash(self, files: list[Path]) -> str:
        h = hashlib.sha256()
        for f in sorted(files, key=lambda p: p.name):
            h.update(f.name.encode())
            h.update(self.file_hash(f).encode())
        return h.hexdigest()

    def file_hash(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        row = self.db.execute("SELECT size, mtime, sha256 FROM file_hash WHERE path = ?", (key,)).fetchone()
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
            return row[2]
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        digest = h.hexdigest()
        with disk_full_as(self.path):
            self.db.execute("INSERT OR REPLACE INTO file_hash VALUES (?, ?, ?, ?)", (key, st.st_size, st.st_mtime_ns, digest))
            self.db.commit()
        return digest

    def close(self) -> None:
        self.db.close()
