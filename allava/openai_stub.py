"""A scripted OpenAI-compatible server on 127.0.0.1 for tests, benchmarks and offline rehearsals.

It lives in the core package because several stages test against it (synth, the bench judge, the
shared client) and the bench must not import the synth stage's modules. It is a real HTTP server,
so what is tested is the real SDK on the wire (headers, status codes, Retry-After), not a mock.

Behaviour is scripted per item (the client sends ``X-Synth-Item: <key>``; without it the key is a
hash of the body): ``ok``, ``429`` / ``500`` / ``timeout`` on the first attempt then ok,
``always429`` / ``always500`` on every attempt, ``malformed``, ``refuse``, ``truncate``. It
counts the usage of every 200 it actually sends, so a test can check the client's token totals
exactly. It also speaks just enough of the Files + Batches API for the batch mode. It runs in a
daemon thread and shuts itself down after ``lifetime`` seconds even if nobody stops it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BEHAVIOURS = ("ok", "429", "500", "always429", "always500", "timeout", "malformed", "refuse", "truncate")


def scripted_usage(key: str) -> tuple[int, int]:
    h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
    return 900 + h % 400, 150 + (h >> 16) % 300


def canned_text(key: str, behaviour: str) -> str:
    mode = key.split("_", 1)[0]
    if behaviour == "refuse":
        return "<refuse>Answering would reveal personal information shown in the image.</refuse>"
    if behaviour == "malformed":
        return f"Sure! This picture ({key}) shows a red cube next to a blue sphere."
    if behaviour == "truncate":
        return f"<caption>A long description of item {key} that goes on and on"
    caption = f"<caption>A detailed scene for item {key}: a red cube left of a blue sphere on a wooden table.</caption>\n"
    answer = f"<answer>Looking closely at item {key}, the cube is left of the sphere, so the answer is the cube.</answer>"
    if mode == "laion":
        return (caption + "<questions>\n<q>Which object is closer to the table edge, and why?</q>\n"
                "<q>How many objects touch the table?</q>\n<q>What lights the scene?</q>\n</questions>\n"
                "<chosen>2</chosen>\n" + answer)
    if mode == "vflan":
        return caption + answer
    return answer


class StubServer:
    """``with StubServer(script) as s: ... s.base_url``; ``script(key) -> behaviour`` (default ok)."""

    def __init__(
        self,
        script: Callable[[str], str] | dict[str, str] | None = None,
        delay: float = 0.0,
        retry_after: str = "1",
        hang: float = 3.0,
        api_key: str | None = None,
        lifetime: float = 600.0,
        model: str = "stub-model",
    ) -> None:
        if isinstance(script, dict):
            table = script
            self.script: Callable[[str], str] = lambda k: table.get(k, "ok")
        else:
            self.script = script or (lambda k: "ok")
        self.delay, self.retry_after, self.hang = delay, retry_after, hang
        self.api_key, self.lifetime, self.model = api_key, lifetime, model
        self.lock = threading.Lock()
        self.attempts: dict[str, list[tuple[float, int]]] = {}  # key -> [(time, status)]
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "responses": 0}
        self.sent: dict[str, int] = {}  # key -> number of 200s sent
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.auth_headers: set[str] = set()
        self._httpd: ThreadingHTTPServer | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> StubServer:
        server = self
        handler = type("Handler", (_Handler,), {"stub": server})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if getattr(self, "_timer", None):
            self._timer.cancel()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # ---- chat ------------------------------------------------------------------------------
    def completion_body(self, key: str, behaviour: str) -> dict[str, Any]:
        pt, ct = scripted_usage(key)
        return {
            "id": f"chatcmpl-{key}", "object": "chat.completion", "created": int(time.time()), "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": canned_text(key, behaviour)},
                         "finish_reason": "length" if behaviour == "truncate" else "stop"}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        }

    def chat(self, key: str) -> tuple[str, int, dict[str, str], dict[str, Any] | None]:
        """(action, status, headers, body) for one attempt; action is 'send' or 'hang'."""
        with self.lock:
            n = len(self.attempts.setdefault(key, []))
            behaviour = self.script(key)
            first = n == 0
            if behaviour.startswith("always"):  # fails on every attempt: exercises the retry bound
                behaviour, first = behaviour.removeprefix("always"), True
            if behaviour == "429" and first:
                status, headers, body = 429, {"Retry-After": self.retry_after}, {"error": {"message": "rate limited", "type": "requests", "code": "rate_limit_exceeded"}}
            elif behaviour == "500" and first:
                status, headers, body = 500, {}, {"error": {"message": "internal error", "type": "server_error"}}
            elif behaviour == "timeout" and first:
                self.attempts[key].append((time.monotonic(), 0))
                return "hang", 0, {}, None
            else:
                status, headers, body = 200, {}, self.completion_body(key, behaviour if behaviour in ("malformed", "refuse", "truncate") else "ok")
            self.attempts[key].append((time.monotonic(), status))
        return "send", status, headers, body

    def record_sent(self, key: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.usage["prompt_tokens"] += body["usage"]["prompt_tokens"]
            self.usage["completion_tokens"] += body["usage"]["completion_tokens"]
            self.usage["responses"] += 1
            self.sent[key] = self.sent.get(key, 0) + 1

    # ---- batch -----------------------------------------------------------------------------
    def create_batch(self, input_file_id: str) -> dict[str, Any]:
        with self.lock:
            bid = f"batch_{len(self.batches) + 1}"
            lines = []
            for line in self.files[input_file_id].decode().splitlines():
                req = json.loads(line)
                key = req["custom_id"]
                behaviour = self.script(key)
                behaviour = behaviour if behaviour in ("malformed", "refuse", "truncate") else "ok"
                body = self.completion_body(key, behaviour)
                self.usage["prompt_tokens"] += body["usage"]["prompt_tokens"]
                self.usage["completion_tokens"] += body["usage"]["completion_tokens"]
                self.usage["responses"] += 1
                lines.append(json.dumps({"id": f"r-{key}", "custom_id": key,
                                         "response": {"status_code": 200, "body": body}, "error": None}))
            out_id = f"file-out-{bid}"
            self.files[out_id] = ("\n".join(lines) + "\n").encode()
            self.batches[bid] = {"id": bid, "object": "batch", "endpoint": "/v1/chat/completions",
                                 "input_file_id": input_file_id, "completion_window": "24h", "status": "validating",
                                 "created_at": int(time.time()), "output_file_id": None, "error_file_id": None,
                                 "_out": out_id, "_polls": 0}
            return self._public(self.batches[bid])

    def retrieve_batch(self, bid: str) -> dict[str, Any]:
        with self.lock:
            b = self.batches[bid]
            b["_polls"] += 1
            if b["_polls"] >= 1:
                b["status"], b["output_file_id"] = "completed", b["_out"]
            return self._public(b)

    @staticmethod
    def _public(b: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in b.items() if not k.startswith("_")}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub: StubServer

    def log_message(self, *args: object) -> None:  # keep test output clean
        return

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> bool:
        data = raw if raw is not None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        with self.stub.lock:
            self.stub.auth_headers.add(auth)
        if self.stub.api_key is not None and auth != f"Bearer {self.stub.api_key}":
            # Like OpenAI, echo (part of) the key back: the client must not log it.
            self._send(401, {"error": {"message": f"Incorrect API key provided: {auth[7:]}", "type": "invalid_request_error", "code": "invalid_api_key"}})
            return False
        return True

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", 0))
        data = self.rfile.read(length)
        if not self._authorized():
            return
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):
            key = self.headers.get("X-Synth-Item") or hashlib.sha256(data).hexdigest()[:20]
            action, status, headers, body = self.stub.chat(key)
            if action == "hang":
                time.sleep(self.stub.hang)
                self.close_connection = True
                return
            if self.stub.delay:
                time.sleep(self.stub.delay)
            if self._send(status, body, headers) and status == 200:
                self.stub.record_sent(key, body)
        elif path.endswith("/files"):
            msg = BytesParser(policy=email_policy).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + data)
            content = b""
            for part in msg.iter_parts():
                if part.get_filename():
                    content = part.get_payload(decode=True)
            fid = f"file-{len(self.stub.files) + 1}"
            self.stub.files[fid] = content
            self._send(200, {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                             "filename": "input.jsonl", "purpose": "batch", "status": "processed"})
        elif path.endswith("/batches"):
            self._send(200, self.stub.create_batch(json.loads(data)["input_file_id"]))
        else:
            self._send(404, {"error": {"message": f"no route {path}"}})

    def do_GET(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 3 and parts[-2] == "batches":
            self._send(200, self.stub.retrieve_batch(parts[-1]))
        elif len(parts) >= 4 and parts[-1] == "content" and parts[-3] == "files":
            self._send(200, None, raw=self.stub.files[parts[-2]])
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})
