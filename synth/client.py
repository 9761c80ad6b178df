"""Backends: one ``complete(request) -> result`` interface, over HTTP or in-process.

The HTTP backend uses the official ``openai`` SDK (``AsyncOpenAI``), so any chat-completions
endpoint works: OpenAI, vLLM, llama.cpp server, Ollama. The SDK's own retries are switched off
(``max_retries=0``); this module retries itself with :mod:`synth.backoff` so every retry is
counted and the bound is ours. Errors are sorted three ways:

* retryable (429, 5xx, timeouts, connection errors) -> back off, try again, up to the bound;
* the item's own problem (400, 422, retries exhausted) -> :class:`RequestFailed`, the item goes to
  rejects this run and is tried again on the next;
* the run's problem (401/403 key, 404 model, quota exhausted) -> :class:`FatalError`, stop now.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from synth.backoff import RetryPolicy, is_retryable_status, retry_after_seconds
from synth.inputs import Item
from synth.redact import redact

log = logging.getLogger("synth")


class FatalError(Exception):
    """The whole run cannot continue (bad key, unknown model...); message is one line for the user."""


class RequestFailed(Exception):
    """This item got no usable response this run (not paid for); it is retried on the next run."""


@dataclass
class ChatRequest:
    key: str
    mode: str
    messages: list[dict[str, Any]]
    item: Item  # the offline teacher answers from the item, not from the messages
    max_tokens: int = 1500
    temperature: float = 0.2


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str
    attempts: int = 1


@dataclass
class Stats:
    """Live counters shown in the progress bar and the summary."""

    retries: dict[str, int] = field(default_factory=dict)

    def count_retry(self, kind: str) -> None:
        self.retries[kind] = self.retries.get(kind, 0) + 1


class Backend(Protocol):
    name: str

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    async def aclose(self) -> None: ...


class HTTPBackend:
    """Chat completions over HTTP through ``openai.AsyncOpenAI`` with our own bounded retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float = 120.0,
        policy: RetryPolicy | None = None,
        stats: Stats | None = None,
    ) -> None:
        import openai

        self._openai = openai
        self.name = model
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.stats = stats or Stats()
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            # Local servers (vLLM, llama.cpp) need no key; the SDK insists on one, so pass a dummy.
            api_key=api_key or "no-key-set",
            max_retries=0,
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self.client.close()

    def _classify(self, exc: Exception) -> tuple[str, float | None]:
        """Return (kind, retry_after) for a retryable error; raise FatalError/RequestFailed otherwise."""
        o = self._openai
        if isinstance(exc, o.APITimeoutError):
            return "timeout", None
        if isinstance(exc, o.APIConnectionError):
            return "connection", None
        if isinstance(exc, o.APIStatusError):
            status = exc.status_code
            detail = redact(" ".join(str(exc.message).split()))[:300]
            if status in (401, 403):
                raise FatalError(
                    f"{self.base_url} refused the API key (HTTP {status}); set OPENAI_API_KEY to a valid key"
                )
            if status == 404:
                raise FatalError(f"HTTP 404 from {self.base_url}: model {self.model!r} or endpoint not found ({detail})")
            if status == 429 and exc.code == "insufficient_quota":
                raise FatalError(f"HTTP 429 insufficient_quota from {self.base_url}: the account is out of credit")
            if is_retryable_status(status):
                return f"http_{status}", retry_after_seconds(exc.response.headers)
            raise RequestFailed(f"HTTP {status}: {detail}")
        raise exc

    async def complete(self, request: ChatRequest) -> ChatResult:
        last = ""
        for attempt in range(1, self.policy.max_attempts + 1):
            try:
                resp = await self.client.chat.completions.create(
                    model=self.model,
                    messages=request.messages,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    extra_headers={"X-Synth-Item": request.key},
                )
            except self._openai.APIError as exc:
                kind, retry_after = self._classify(exc)
                last = kind if retry_after is None else f"{kind} (Retry-After {retry_after:g}s)"
                if attempt == self.policy.max_attempts:
                    break
                self.stats.count_retry(kind)
                wait = self.policy.delay(attempt, retry_after)
                log.info("retry %s attempt %d after %s; waiting %.2fs", request.key, attempt, last, wait)
                await asyncio.sleep(wait)
                continue
            choice = resp.choices[0] if resp.choices else None  # paid even when odd: journal, then reject
            usage = resp.usage
            return ChatResult(
                text=(choice.message.content or "") if choice else "",
                finish_reason=choice.finish_reason if choice else None,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                model=resp.model or self.model,
                attempts=attempt,
            )
        raise RequestFailed(f"gave up after {self.policy.max_attempts} attempts; last error: {last}")
