"""A judge model behind any OpenAI-compatible chat-completions API.

Why: seven of the twelve benchmarks are scored by a judge model. Judgments drift between judge
versions and cost money, so every call is (1) cached on disk keyed by a hash of the judge model and
the full request (system + prompt + sampling settings, and the re-ask number when an official rule
sends the same request again), so reruns never re-ask; (2) retried a
bounded number of times with exponential backoff that honours ``Retry-After`` (LLaVA's review
scripts retry forever -- we do not); (3) recorded, prompt, prompt version and reply, in a JSONL log
so a report can be audited. The API key comes from the environment (``ALLAVA_JUDGE_API_KEY``, else
``OPENAI_API_KEY``) and is never logged. Retries, error sorting and key handling are the shared
client's (:mod:`allava.openai_client`), the same as synth's, so both stages fail alike.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allava.openai_client import ClientError, OpenAIClient, RetryPolicy
from bench.benchmarks.base import JudgeLike

KEY_ENV_VARS = ("ALLAVA_JUDGE_API_KEY", "OPENAI_API_KEY")
# ask()'s keywords are declared once, on the protocol adapters program against; binding to it keeps
# this client and the adapters from drifting apart.
_ASK_SIGNATURE = inspect.signature(JudgeLike.ask)
DEFAULT_CACHE_DIR = Path(os.environ.get("ALLAVA_JUDGE_CACHE", Path.home() / ".cache" / "allava" / "judge"))


class JudgeError(RuntimeError):
    """The judge could not be reached or refused the request after the bounded retries."""


@dataclass
class JudgeStats:
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0

    def count_retry(self, kind: str) -> None:
        """The shared client's retry callback: the judge counts retries of every kind together."""
        self.retries += 1


class JudgeCache:
    """SQLite key -> reply store; one file per cache dir, safe to share between runs."""

    def __init__(self, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / "judge_cache.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT, t REAL)")
        self._db.commit()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, model: str, reply: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)", (key, model, reply, time.time()))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _image_data_url(image: Path | bytes) -> tuple[str, str]:
    """(data URL, sha256) for a judge that sees the image (MLLM-Bench uses GPT-4V)."""
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}", hashlib.sha256(data).hexdigest()


class JudgeClient:
    """``ask(prompt) -> reply text`` through the ``openai`` SDK, cached, retried and logged."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        cache_dir: str | Path | None = None,
        log_path: str | Path | None = None,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 120.0,
        client: Any = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.stats = JudgeStats()
        self.cache = JudgeCache(Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR)
        self.log_path = Path(log_path) if log_path else None
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_lock = threading.Lock()
        # A server's Retry-After is capped like our own backoff: a judge must not stall a report.
        policy = RetryPolicy(max_attempts=max_retries + 1, base=backoff_s, cap=max_backoff_s,
                             max_retry_after=max_backoff_s)
        self._client = OpenAIClient(base_url, model, api_key=api_key, key_env=KEY_ENV_VARS, timeout=timeout_s,
                                    policy=policy, on_retry=self.stats.count_retry, sdk=client)

    def describe(self) -> str:
        """What a report prints to name the judge (model and endpoint, never the key)."""
        return f"{self.model} @ {self.base_url}" if self.base_url else self.model

    @staticmethod
    def cache_key(model: str, request: dict[str, Any]) -> str:
        blob = json.dumps({"model": model, **request}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def ask(self, prompt: str, **options: Any) -> str:
        """One chat turn; ``options`` are :meth:`JudgeLike.ask`'s keywords (a wrong name is a TypeError).

        Raises :class:`JudgeError` when the bounded retries are exhausted or the server refuses.
        """
        bound = _ASK_SIGNATURE.bind(self, prompt, **options)
        bound.apply_defaults()
        opts = bound.arguments
        system, temperature, max_tokens, stop, image, tag, attempt, version = (
            opts["system"], opts["temperature"], opts["max_tokens"], opts["stop"], opts["image"], opts["tag"],
            opts["attempt"], opts["prompt_version"])
        image_url, image_hash = _image_data_url(image) if image is not None else (None, None)
        request = {"system": system, "prompt": prompt, "temperature": temperature, "max_tokens": max_tokens,
                   "stop": stop, "image_sha256": image_hash}
        if attempt:  # a re-ask of an identical request is a new request (and cached as such); attempt 0
            request["attempt"] = attempt  # keeps the keys the cache had before re-asks existed
        key = self.cache_key(self.model, request)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            self._log(tag, key, request, cached, cached=True, attempts=0, version=version)
            return cached
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        if image_url:  # text, then the image: MLLM-Bench scripts/evaluate.py request_api's payload order
            content: Any = [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": image_url}}]
        else:
            content = prompt
        messages.append({"role": "user", "content": content})
        sampling: dict[str, Any] = {"temperature": temperature}
        if max_tokens is not None:
            sampling["max_tokens"] = max_tokens
        if stop:
            sampling["stop"] = stop
        reply, attempts = self._call(messages, sampling, tag, key, request, version)
        self.cache.put(key, self.model, reply)
        self._log(tag, key, request, reply, cached=False, attempts=attempts, version=version)
        return reply

    def _call(self, messages: list[dict[str, Any]], sampling: dict[str, Any], tag: str, key: str,
              request: dict[str, Any], version: str = "") -> tuple[str, int]:
        """(reply, attempts) from the shared client; any way it gives up becomes one logged :class:`JudgeError`."""
        try:
            response, attempts = self._client.complete(messages, label=tag or key[:12], **sampling)
        except ClientError as exc:
            self.stats.calls += exc.attempts
            self.stats.failures += 1
            msg = f"judge {self.describe()} failed after {exc.attempts} attempt(s): {type(exc).__name__}: {exc}"
            self._log(tag, key, request, None, cached=False, attempts=exc.attempts, error=msg, version=version)
            raise JudgeError(msg) from exc
        self.stats.calls += attempts
        return (response.choices[0].message.content or ""), attempts

    def _log(self, tag: str, key: str, request: dict[str, Any], reply: str | None, *, cached: bool, attempts: int,
             error: str | None = None, version: str = "") -> None:
        if not self.log_path:
            return
        record = {"time": time.time(), "judge": self.model, "base_url": self.base_url, "tag": tag, "key": key,
                  "prompt_version": version, **request, "reply": reply, "cached": cached, "attempts": attempts,
                  "error": error}
        with self._log_lock, self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._client.close()
        self.cache.close()


def judge_from_options(model: str | None, base_url: str | None, output_dir: str | Path,
                       cache_dir: str | Path | None = None) -> JudgeClient | None:
    """What the runner calls with ``--judge-model``/``--judge-base-url``: None when no judge is set,
    else a client logging to ``<output_dir>/judge_log.jsonl``."""
    if not model:
        return None
    out = Path(output_dir)
    return JudgeClient(model, base_url, cache_dir=cache_dir or out / "judge_cache", log_path=out / "judge_log.jsonl")
