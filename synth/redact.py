"""Keep the API key out of everything we print or write.

The key itself is never formatted into a message by our code, but servers echo it back in error
bodies (OpenAI returns a masked form, proxies sometimes the whole key), and those bodies end up in
exception messages that we log, journal and print. Every such string passes through
:func:`redact` first.
"""

from __future__ import annotations

import logging

_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so later :func:`redact` calls hide it (ignores trivially short values)."""
    if value and len(value) >= 6:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Logging filter applied to our handlers: formats the message, then hides secrets in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True
