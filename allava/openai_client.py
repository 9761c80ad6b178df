"""One retrying client for OpenAI-compatible chat-completions servers, shared by every stage that calls one.

Why one: synth (many concurrent requests, async) and the bench judge (one question at a time,
sync) talk to the same kinds of servers -- OpenAI, vLLM, llama.cpp, Ollama -- and must agree on
what a failure means, how long to wait, when to give up and how the API key is handled. Two
copies had drifted (different backoff, different retryable set, different dummy key).

We turn the SDK's own retries off (``max_retries=0``) and retry here instead, so that every retry
is counted, logged, bounded and testable. LLaVA's review scripts retry forever with a fixed sleep;
that hammers a rate-limited server in lock-step and never gives up on a dead one. Full jitter
spreads concurrent workers out; Retry-After (or OpenAI's ``retry-after-ms``) wins when the server
says how long to wait, capped so a hostile header cannot stall a run.

Every failed attempt is sorted three ways:

* retryable (429, 5xx, timeouts, connection errors) -> back off, try again, up to the bound;
* this request's own problem (400, 422, retries exhausted) -> :class:`RequestFailed`;
* the run's problem (401/403 key, 404 model, quota exhausted) -> :class:`FatalError`: no other
  request can succeed either, so the caller should stop.

The key is read from the environment only (flags end up in shell history), is never formatted
into a log line, and is scrubbed from server error bodies, which sometimes echo it back.
The ``openai`` package is imported only when a client is built, so the core package keeps it optional.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
DEFAULT_KEY_ENV = ("OPENAI_API_KEY",)
# Keyless local servers (vLLM, llama.cpp, Ollama) accept any key, but the SDK refuses to start without one.
NO_KEY = "no-key-set"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; tests shrink ``base`` to ~0.01 s to stay fast."""

    max_attempts: int = 7  # first try + 6 retries, as distilabel
    base: float = 1.0  # seconds
    cap: float = 60.0  # longest computed backoff
    max_retry_after: float = 120.0  # longest server-requested wait we accept

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        With a server hint, wait that long (bounded) plus a little jitter so workers told the
        same value do not return together; otherwise full jitter over base * 2**(attempt-1).
        """
        r = (rng or random).random()
        if retry_after is not None and retry_after >= 0:
            hinted = min(retry_after, self.max_retry_after)
            return hinted + r * min(self.base, hinted * 0.1 + 0.001)
        return r * min(self.cap, self.base * 2 ** (attempt - 1))


def is_retryable_status(status: int) -> bool:
    """Whether another attempt can succeed: overload, conflicts and any server-side error."""
    return status in RETRYABLE_STATUS or status >= 500


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Parse ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None when absent or bad."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def api_key_from_env(names: Sequence[str] = DEFAULT_KEY_ENV) -> str | None:
    """The first non-empty key among ``names``; a stage lists its own variable before the shared one."""
    if isinstance(names, str):  # a lone name, not its characters
        names = (names,)
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


class ClientError(Exception):
    """A request that ended without a response; ``attempts`` says how many were made (0: none)."""

    def __init__(self, message: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


class FatalError(ClientError):
    """The whole run cannot continue (bad key, unknown model...); message is one line for the user."""


class RequestFailed(ClientError):
    """This request got no usable response (nothing paid for); another request, or a later run, may succeed."""


class Retryable(NamedTuple):
    """A failed attempt worth repeating: its kind (``http_429``, ``timeout``...) and the server's wait hint."""

    kind: str
    retry_after: float | None

    def describe(self) -> str:
        return self.kind if self.retry_after is None else f"{self.kind} (Retry-After {self.retry_after:g}s)"


class Reply(NamedTuple):
    """The SDK's chat completion and the attempt (1-based) that produced it."""

    response: Any
    attempts: int


class OpenAIClient:
    """Chat completions with our own bounded retries, through ``openai.OpenAI`` (:meth:`complete`)
    or ``openai.AsyncOpenAI`` (:meth:`acomplete`); both paths share :meth:`classify` and the policy.

    ``on_retry(kind)`` is called once per retry so callers can count them in their own stats.
    ``sdk``/``async_sdk`` accept ready-made SDK clients (tests, custom transports); otherwise
    they are built on first use with the SDK's retries off.
    """

    def __init__(
        self,
        base_url: str | None,
        model: str,
        *,
        api_key: str | None = None,
        key_env: Sequence[str] = DEFAULT_KEY_ENV,
        timeout: float = 120.0,
        policy: RetryPolicy | None = None,
        on_retry: Callable[[str], None] | None = None,
        logger: logging.Logger | None = None,
        sdk: Any = None,
        async_sdk: Any = None,
    ) -> None:
        self._openai = importlib.import_module("openai")
        self.base_url = base_url
        self.model = model
        self.key_env = (key_env,) if isinstance(key_env, str) else tuple(key_env)
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.on_retry = on_retry
        self.log = logger or logging.getLogger(__name__)
        self._api_key = api_key or api_key_from_env(self.key_env)
        self._sdk, self._async_sdk = sdk, async_sdk
        self._given = {id(c) for c in (sdk, async_sdk) if c is not None}  # the caller's to close, not ours

    @property
    def endpoint(self) -> str:
        """How messages name the server (never with the key)."""
        return self.base_url or "the OpenAI API"

    def _build(self, cls: type) -> Any:
        return cls(base_url=self.base_url, api_key=self._api_key or NO_KEY, max_retries=0, timeout=self.timeout)

    @property
    def sdk(self) -> Any:
        if self._sdk is None:
            self._sdk = self._build(self._openai.OpenAI)
        return self._sdk

    @property
    def async_sdk(self) -> Any:
        if self._async_sdk is None:
            self._async_sdk = self._build(self._openai.AsyncOpenAI)
        return self._async_sdk

    def close(self) -> None:
        """Close the sync SDK client we built; the next call builds a fresh one."""
        if self._sdk is not None and id(self._sdk) not in self._given:
            sdk, self._sdk = self._sdk, None
            sdk.close()

    async def aclose(self) -> None:
        """Close both SDK clients we built; the async one's connections belong to the loop that used them."""
        if self._async_sdk is not None and id(self._async_sdk) not in self._given:
            sdk, self._async_sdk = self._async_sdk, None
            await sdk.close()
        self.close()

    def scrub(self, text: str) -> str:
        """``text`` without our key: servers echo it in error bodies (OpenAI masked, proxies whole)."""
        key = self._api_key
        return text.replace(key, "***") if key and len(key) >= 6 else text

    def classify(self, exc: Exception, attempt: int = 1) -> Retryable:
        """The retryable kind of a failed attempt; raises :class:`FatalError` or :class:`RequestFailed` otherwise."""
        o = self._openai
        if isinstance(exc, o.APITimeoutError):
            return Retryable("timeout", None)
        if isinstance(exc, o.APIConnectionError):
            return Retryable("connection", None)
        if not isinstance(exc, o.APIStatusError):
            raise exc
        status = exc.status_code
        detail = self.scrub(" ".join(str(exc.message).split()))[:300]
        if status in (401, 403):
            raise FatalError(f"{self.endpoint} refused the API key (HTTP {status}); "
                             f"set {' or '.join(self.key_env)} to a valid key", attempt)
        if status == 404:
            raise FatalError(f"HTTP 404 from {self.endpoint}: model {self.model!r} or endpoint not found ({detail})",
                             attempt)
        if status == 429 and exc.code == "insufficient_quota":
            raise FatalError(f"HTTP 429 insufficient_quota from {self.endpoint}: the account is out of credit", attempt)
        if is_retryable_status(status):
            return Retryable(f"http_{status}", retry_after_seconds(exc.response.headers))
        raise RequestFailed(f"HTTP {status}: {detail}", attempt)

    def _wait_before_retry(self, exc: Exception, attempt: int, label: str) -> float:
        """Seconds to sleep before the next attempt; raises when there must be none (fatal, final, or bound reached)."""
        retry = self.classify(exc, attempt)
        if attempt >= self.policy.max_attempts:
            raise RequestFailed(f"gave up after {attempt} attempts; last error: {retry.describe()}", attempt)
        if self.on_retry is not None:
            self.on_retry(retry.kind)
        wait = self.policy.delay(attempt, retry.retry_after)
        self.log.info("retry %s attempt %d after %s; waiting %.2fs", label, attempt, retry.describe(), wait)
        return wait

    def _request(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, **options}

    def complete(self, messages: list[dict[str, Any]], *, label: str = "", **options: Any) -> Reply:
        """One chat completion, blocking between attempts; ``options`` go to ``chat.completions.create``."""
        request = self._request(messages, options)
        for attempt in itertools.count(1):
            try:
                return Reply(self.sdk.chat.completions.create(**request), attempt)
            except self._openai.APIError as exc:
                time.sleep(self._wait_before_retry(exc, attempt, label))
        raise AssertionError("unreachable")  # the last attempt's failure raises

    async def acomplete(self, messages: list[dict[str, Any]], *, label: str = "", **options: Any) -> Reply:
        """Like :meth:`complete`, but waits without blocking the event loop's other requests."""
        request = self._request(messages, options)
        for attempt in itertools.count(1):
            try:
                return Reply(await self.async_sdk.chat.completions.create(**request), attempt)
            except self._openai.APIError as exc:
                await asyncio.sleep(self._wait_before_retry(exc, attempt, label))
        raise AssertionError("unreachable")  # the last attempt's failure raises
