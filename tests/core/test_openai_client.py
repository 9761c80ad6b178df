"""The shared OpenAI-compatible client against the real scripted server on 127.0.0.1, sync and async.

Every check runs through both call paths, because synth uses the async one and the bench judge the
sync one, and they must retry, give up and handle the key identically.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from allava.openai_client import NO_KEY, FatalError, OpenAIClient, Reply, RequestFailed, RetryPolicy, api_key_from_env
from allava.openai_stub import StubServer

pytest.importorskip("openai")

MESSAGES = [{"role": "user", "content": "Describe the image."}]
KEY = "sk-test-CORE-5a4b3c2d1e0f"
KEY_ENV = ("ALLAVA_TEST_CLIENT_KEY", "OPENAI_API_KEY")
PATHS = ("sync", "async")


def fast(max_attempts: int = 3, max_retry_after: float = 5.0) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, base=0.01, cap=0.05, max_retry_after=max_retry_after)


def make_client(server: StubServer, policy: RetryPolicy, retries: Counter) -> OpenAIClient:
    return OpenAIClient(server.base_url, "stub-model", key_env=KEY_ENV, timeout=5.0, policy=policy,
                        on_retry=lambda kind: retries.update([kind]))


def call(path: str, client: OpenAIClient, item: str) -> Reply:
    """One request for scripted ``item`` through the sync or the async path, closing the client after."""
    kw = {"label": item, "max_tokens": 16, "extra_headers": {"X-Synth-Item": item}}
    if path == "sync":
        try:
            return client.complete(MESSAGES, **kw)
        finally:
            client.close()

    async def go() -> Reply:
        try:
            return await client.acomplete(MESSAGES, **kw)
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture(autouse=True)
def env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLAVA_TEST_CLIENT_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-this-one-000000")


@pytest.mark.parametrize("path", PATHS)
def test_429_retry_after_is_honoured_and_capped(path: str) -> None:
    retries: Counter = Counter()
    with StubServer({"item": "429"}, retry_after="0.4", api_key=KEY, lifetime=60) as server:
        reply = call(path, make_client(server, fast(), retries), "item")
        (t0, s0), (t1, s1) = server.attempts["item"]
    assert reply.attempts == 2 and reply.response.choices[0].message.content
    assert (s0, s1) == (429, 200) and t1 - t0 >= 0.39  # the hint, not the 0.01 s backoff
    assert retries == {"http_429": 1}

    # A hostile hint (an hour) is capped by max_retry_after, and a server that keeps refusing is left after the bound.
    retries.clear()
    with StubServer({"busy": "always429"}, retry_after="3600", api_key=KEY, lifetime=60) as server:
        with pytest.raises(RequestFailed, match=r"gave up after 3 attempts; last error: http_429") as exc:
            call(path, make_client(server, fast(max_retry_after=0.2), retries), "busy")
        times = [t for t, _ in server.attempts["busy"]]
    assert exc.value.attempts == 3 and len(times) == 3
    assert all(0.19 <= b - a < 1.5 for a, b in zip(times[:-1], times[1:], strict=True))
    assert retries == {"http_429": 2}


@pytest.mark.parametrize("path", PATHS)
def test_500_is_retried_up_to_the_bound_then_fails_the_request(path: str) -> None:
    retries: Counter = Counter()
    with StubServer({"down": "always500", "flaky": "500"}, api_key=KEY, lifetime=60) as server:
        assert call(path, make_client(server, fast(), retries), "flaky").attempts == 2
        with pytest.raises(RequestFailed, match=r"gave up after 4 attempts; last error: http_500") as exc:
            call(path, make_client(server, fast(max_attempts=4), retries), "down")
        statuses = [s for _, s in server.attempts["down"]]
    assert not isinstance(exc.value, FatalError) and exc.value.attempts == 4
    assert statuses == [500] * 4  # bounded: exactly max_attempts requests, no SDK retries on top
    assert retries == {"http_500": 1 + 3}


@pytest.mark.parametrize("path", PATHS)
def test_401_is_fatal_at_once_and_the_echoed_key_is_hidden(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk-wrong-KEY-0123456789"
    monkeypatch.setenv("ALLAVA_TEST_CLIENT_KEY", wrong)
    retries: Counter = Counter()
    with StubServer(api_key=KEY, lifetime=60) as server:  # echoes the presented key in its 401 body, like OpenAI
        with pytest.raises(FatalError) as exc:
            call(path, make_client(server, fast(max_attempts=5), retries), "item")
        auths = set(server.auth_headers)
    msg = str(exc.value)
    assert "HTTP 401" in msg and "ALLAVA_TEST_CLIENT_KEY or OPENAI_API_KEY" in msg and wrong not in msg
    assert auths == {f"Bearer {wrong}"} and exc.value.attempts == 1 and not retries


@pytest.mark.parametrize("path", PATHS)
def test_env_key_reaches_the_server_but_no_log_or_output(path: str, caplog: pytest.LogCaptureFixture,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # everything anyone logs, the SDK and httpx included
    retries: Counter = Counter()
    with StubServer({"item": "429"}, retry_after="0", api_key=KEY, lifetime=60) as server:
        client = make_client(server, fast(), retries)
        reply = call(path, client, "item")
        auths = set(server.auth_headers)
    assert reply.attempts == 2 and auths == {f"Bearer {KEY}"}  # the first name in key_env wins
    assert "retry item attempt 1 after http_429" in caplog.text  # the retry was logged...
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, repr(client)):
        assert KEY not in text  # ...and nothing we log, print or show holds the key


def test_keyless_local_server_gets_the_dummy_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)
    assert api_key_from_env(KEY_ENV) is None
    with StubServer(lifetime=60) as server:
        assert call("sync", make_client(server, fast(), Counter()), "item").attempts == 1
        assert server.auth_headers == {f"Bearer {NO_KEY}"}


def test_api_key_from_env_takes_the_first_non_empty_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLAVA_TEST_CLIENT_KEY", "")
    assert api_key_from_env(KEY_ENV) == "sk-not-this-one-000000"
    assert api_key_from_env("ALLAVA_TEST_CLIENT_KEY") is None  # a lone name is a name, not its letters
