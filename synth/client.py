"""Backends: one ``complete(request) -> result`` interface, over HTTP or in-process.

The HTTP backend goes through the shared :class:`allava.openai_client.OpenAIClient` (the official
``openai`` SDK, async), so any chat-completions endpoint works: OpenAI, vLLM, llama.cpp server,
Ollama. That client owns the retry policy and sorts errors three ways, which is what the runner
acts on:

* retryable (429, 5xx, timeouts, connection errors) -> back off, try again, up to the bound;
* the item's own problem (400, 422, retries exhausted) -> :class:`RequestFailed`, the item goes to
  rejects this run and is tried again on the next;
* the run's problem (401/403 key, 404 model, quota exhausted) -> :class:`FatalError`, stop now.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from allava.openai_client import FatalError, OpenAIClient, RequestFailed, RetryPolicy
from synth.inputs import Item

__all__ = ["Backend", "ChatRequest", "ChatResult", "FatalError", "HTTPBackend", "RequestFailed", "Stats"]

log = logging.getLogger("synth")


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
    """Chat completions over HTTP: the shared client's async path, retries counted in ``stats``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float = 120.0,
        policy: RetryPolicy | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.name = model
        self.stats = stats or Stats()
        # Retry lines go to the "synth" logger: its handler writes synth.log through the redacting filter.
        self.client = OpenAIClient(base_url, model, api_key=api_key, timeout=timeout, policy=policy,
                                   on_retry=self.stats.count_retry, logger=log)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def complete(self, request: ChatRequest) -> ChatResult:
        resp, attempts = await self.client.acomplete(
            request.messages,
            label=request.key,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            extra_headers={"X-Synth-Item": request.key},
        )
        choice = resp.choices[0] if resp.choices else None  # paid even when odd: journal, then reject
        usage = resp.usage
        return ChatResult(
            text=(choice.message.content or "") if choice else "",
            finish_reason=choice.finish_reason if choice else None,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=resp.model or self.client.model,
            attempts=attempts,
        )
