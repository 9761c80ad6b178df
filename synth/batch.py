"""OpenAI Batch API mode: submit, poll, collect; resumable because job ids live in the output folder.

Batch requests cost half and have their own (much larger) rate limits, at the price of latency
(up to 24 h). ``batch_jobs.json`` in the output folder lists every submitted job; a rerun of the
same command polls those jobs instead of submitting again, and collected responses go through the
same journal as live ones, so the final files are written by the same code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allava.fileio import write_json_atomic
from synth.client import ChatRequest
from synth.inputs import Item
from synth.journal import FAILED, RESPONSE, Journal
from synth.pricing import Price

JOBS_FILE = "batch_jobs.json"
FINAL_STATES = ("completed", "failed", "expired", "cancelled")


def load_jobs(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / JOBS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def save_jobs(out_dir: Path, jobs: list[dict[str, Any]]) -> None:
    write_json_atomic(out_dir / JOBS_FILE, jobs)


async def submit(
    client: Any, items: list[Item], build_request: Callable[[Item], ChatRequest], model: str,
    prompt_id: str, out_dir: Path, chunk: int, jobs: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Write request files (one per ``chunk`` items), upload them and create batch jobs."""
    batch_dir = out_dir / "batch"
    batch_dir.mkdir(parents=True, exist_ok=True)
    new = []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        path = batch_dir / f"input-{len(jobs) + len(new):04d}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for item in part:
                req = build_request(item)
                body = {"model": model, "messages": req.messages, "max_tokens": req.max_tokens,
                        "temperature": req.temperature}
                f.write(json.dumps({"custom_id": item.key, "method": "POST", "url": "/v1/chat/completions",
                                    "body": body}) + "\n")
        with path.open("rb") as f:
            uploaded = await client.files.create(file=(path.name, f.read()), purpose="batch")
        job = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        new.append({"id": job.id, "input_file_id": uploaded.id, "status": job.status, "keys": [i.key for i in part],
                    "prompt_id": prompt_id, "model": model, "submitted": round(time.time(), 3), "collected": False})
        save_jobs(out_dir, jobs + new)  # saved after each job: a crash never forgets a paid submission
    return jobs + new


async def collect(client: Any, job: dict[str, Any], journal: Journal, price: Price, done: set[str]) -> tuple[int, int]:
    """Journal a finished job's responses and errors; keys it did not answer are journaled as failed."""
    remote = await client.batches.retrieve(job["id"])
    job["status"] = remote.status
    if remote.status not in FINAL_STATES:
        return 0, 0
    ok = failed = 0
    seen: set[str] = set()
    for file_id in (remote.output_file_id, remote.error_file_id):
        if not file_id:
            continue
        content = await client.files.content(file_id)
        for line in content.text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key = row.get("custom_id")
            if key not in job["keys"] or key in seen or key in done:
                continue
            seen.add(key)
            resp = row.get("response") or {}
            body = resp.get("body") or {}
            if resp.get("status_code") == 200 and body.get("choices") is not None:
                usage = body.get("usage") or {}
                choice = (body.get("choices") or [{}])[0]
                pt, ct = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
                journal.append({"key": key, "status": RESPONSE, "text": (choice.get("message") or {}).get("content") or "",
                                "finish_reason": choice.get("finish_reason"), "prompt_tokens": pt,
                                "completion_tokens": ct, "cost": price.cost(pt, ct, batch=True),
                                "model": body.get("model") or job["model"], "prompt_id": job["prompt_id"],
                                "batch": job["id"], "t": round(time.time(), 3)})
                ok += 1
            else:
                err = (row.get("error") or body.get("error") or {})
                msg = err.get("message") if isinstance(err, dict) else str(err)
                journal.append({"key": key, "status": FAILED, "batch": job["id"],
                                "reason": f"batch: HTTP {resp.get('status_code')}: {msg}", "t": round(time.time(), 3)})
                failed += 1
    for key in job["keys"]:
        if key not in seen and key not in done:
            journal.append({"key": key, "status": FAILED, "batch": job["id"],
                            "reason": f"batch: job {remote.status} without an answer for this request",
                            "t": round(time.time(), 3)})
            failed += 1
    job["collected"] = True
    return ok, failed
