"""Retry policy: exponential backoff with full jitter that honours Retry-After, and a hard bound.

We turn the SDK's own retries off (``max_retries=0``) and retry here instead, so that every retry
is counted, logged, bounded and testable. LLaVA's review scripts retry forever with a fixed sleep;
that hammers a rate-limited server in lock-step and never gives up on a dead one. Full jitter
spreads concurrent workers out; Retry-After (or OpenAI's ``retry-after-ms``) wins when the server
says how long to wait, capped so a hostile header cannot stall a run.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 7  # first try + 6 retries, as distilabel
    base: float = 1.0  # seconds; tests use ~0.01
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
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError, IndexError):
        return None
