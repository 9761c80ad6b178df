"""Judged benchmarks against a scripted chat-completions server on 127.0.0.1.

The server (http.server in a daemon thread) answers by recognising each protocol's prompt, stops
when the test ends and also by itself after 60 s. Checks: every judged benchmark yields a score,
prompts and replies are logged, the cache answers reruns, an unparsable MM-Vet reply is re-asked
and then scored 0 (counted), TouchStone's and MLLM-Bench's re-asks reach the server, are counted and
replay from the cache, and a dead judge is counted rather than crashing the run. The shared scripted server
(``allava.openai_stub``) checks the bounded retries and a refused key.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from allava.openai_stub import StubServer
from bench.benchmarks import get_adapter
from bench.benchmarks.mllm_bench import PROMPT_VERSION as MLLM_VERSION
from bench.benchmarks.touchstone import PROMPT_VERSION as TOUCHSTONE_VERSION
from bench.judge import JudgeClient, JudgeError

DATA = Path(__file__).parent / "data"


def scripted_reply(prompt: str, n: int = 0) -> str:
    """The reply to the n-th request (0-based) with this exact text. Answers marked REASK get an
    unreadable first reply where the official rule asks again (TouchStone, MLLM-Bench)."""
    if "REASK" in prompt and n == 0 and prompt.startswith(("[Detailed Image Description]", "### You are an excellent")):
        return "seven five" if prompt.startswith("[Detailed") else "I prefer the model's answer."
    if "Compare the ground truth and prediction" in prompt:
        return "n/a" if "UNPARSABLE" in prompt else "0.8"
    if "match an answer with several options" in prompt:
        return "B"
    if "true class of the image" in prompt:
        return "yes" if "true class of the image is: cat" in prompt else "no"
    if prompt.startswith("[Context]"):
        return "8 6\nThe second answer is shorter."
    if prompt.startswith("[Detailed Image Description]"):
        return "7 5"
    if prompt.startswith("### You are an excellent evaluator."):  # MLLM-Bench: a vote line
        return "The model's answer is better.\nAnswer1" if re.search(r"~~~Answer1\n(REASK )?MODEL", prompt) \
            else "Better.\nAnswer2"
    if "[The Start of Assistant A's Answer]\nMODEL" in prompt:
        return "Assistant A is better. [[A]]"
    return "Assistant B is better. [[B]]"


class Handler(BaseHTTPRequestHandler):
    calls: list[dict] = []
    seen: Counter = Counter()

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.calls.append(body)
        content = body["messages"][-1]["content"]
        text = content if isinstance(content, str) else next(p["text"] for p in content if p["type"] == "text")
        n = Handler.seen[text]
        Handler.seen[text] += 1
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": scripted_reply(text, n)}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(60, httpd.shutdown)  # bounded: stops by itself
    timer.daemon = True
    timer.start()
    Handler.calls = []
    Handler.seen = Counter()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    timer.cancel()
    httpd.shutdown()
    httpd.server_close()


JUDGED = ["mmvet", "llava_bench", "touchstone", "mllm_bench", "vicuna80", "emt", "mmbench"]


def model_answers(name: str, items: list) -> dict[str, str]:
    if name == "mmbench":
        return {it.id: "something unclear" for it in items}  # forces the judge matcher
    if name in ("mllm_bench", "vicuna80"):
        return {it.id: "MODEL answer" for it in items}
    return {it.id: "cat" for it in items}


def test_every_judged_benchmark_scores_and_is_logged(server: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ALLAVA_JUDGE_API_KEY", "sk-test-secret")
    log = tmp_path / "judge_log.jsonl"
    judge = JudgeClient("scripted-judge", server, cache_dir=tmp_path / "cache", log_path=log, max_retries=1)
    results = {}
    for name in JUDGED:
        ad = get_adapter(name)
        items = ad.load(DATA / name)
        results[name] = ad.score(items, model_answers(name, items), judge=judge)
        assert results[name].headline is not None, (name, results[name])
        assert results[name].judge == "scripted-judge"
        assert "reasks" in results[name].counts, name  # every judged scorer records its re-asks
        if name != "mmbench":
            assert results[name].prompt_version and results[name].details["judgments"], name
    # MM-Vet: v1 graded 0.8; v2 unparsable -> 5 re-asks then 0 (official loop), counted
    mv = results["mmvet"]
    assert mv.headline == pytest.approx(40.0)
    assert mv.counts["unparsable_gave_0"] == 1 and mv.counts["reasks"] == 5
    assert mv.breakdown == {"ocr": pytest.approx(80.0), "rec": pytest.approx(40.0)}
    assert results["llava_bench"].headline == pytest.approx(75.0)
    # TouchStone: model is assistant 2 then 1 -> scores 5 and 7 -> mean 6 * 100
    assert results["touchstone"].headline == pytest.approx(600.0)
    assert results["touchstone"].details["reference_gpt4_ha_score"] == pytest.approx(600.0)
    # Pairwise: the scripted judge always prefers the model -> both orders agree -> wins
    assert results["vicuna80"].headline == 100.0 and results["mllm_bench"].headline == 100.0
    assert results["emt"].breakdown == {"cifar10": 50.0, "mnist": 0.0}
    assert results["mmbench"].counts["needed_judge"] == 4
    assert results["mmbench"].headline == 0.0  # judge says B everywhere: no base has every copy right
    assert results["mmbench"].counts["judge_unmatched"] == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records and all(r["prompt"] and r["reply"] is not None for r in records)
    assert "sk-test-secret" not in log.read_text()
    assert sum(1 for r in records if "mllm_bench" in r["tag"] and r["image_sha256"]) == 4
    # rerun: everything comes from the cache, no new HTTP calls
    n = len(Handler.calls)
    again = get_adapter("mmvet")
    assert again.score(again.load(DATA / "mmvet"), model_answers("mmvet", []) or {"v1": "cat", "v2": "cat"},
                       judge=judge).headline == pytest.approx(40.0)
    assert len(Handler.calls) == n and judge.stats.cache_hits > 0


def test_dead_judge_is_counted_not_fatal(tmp_path: Path) -> None:
    judge = JudgeClient("dead", "http://127.0.0.1:9/v1", cache_dir=tmp_path, log_path=tmp_path / "log.jsonl",
                        max_retries=1, backoff_s=0.01, timeout_s=2)
    ad = get_adapter("llava_bench")
    res = ad.score(ad.load(DATA / "llava_bench"), {"0": "x", "1": "y"}, judge=judge)
    assert res.counts["judge_errors"] == 2 and res.headline is None
    assert all(json.loads(line)["error"] for line in (tmp_path / "log.jsonl").read_text().splitlines())


def test_judge_gives_up_after_bounded_retries_and_at_once_on_a_refused_key(tmp_path: Path, monkeypatch) -> None:
    wrong = "sk-judge-WRONG-0123456789"
    monkeypatch.setenv("ALLAVA_JUDGE_API_KEY", wrong)
    log = tmp_path / "log.jsonl"
    with StubServer(lambda key: "always500", lifetime=60) as server:
        judge = JudgeClient("j", server.base_url, cache_dir=tmp_path / "c", log_path=log, max_retries=2, backoff_s=0.01)
        with pytest.raises(JudgeError, match="after 3 attempt"):
            judge.ask("Grade this.", tag="t500")
        assert [s for a in server.attempts.values() for _, s in a] == [500] * 3
    assert (judge.stats.calls, judge.stats.retries, judge.stats.failures) == (3, 2, 1)
    with StubServer(api_key="sk-judge-RIGHT-9876543210", lifetime=60) as server:  # echoes the wrong key back
        judge = JudgeClient("j", server.base_url, cache_dir=tmp_path / "c", log_path=log, max_retries=4, backoff_s=0.01)
        with pytest.raises(JudgeError, match="HTTP 401") as exc:
            judge.ask("Grade this.", tag="t401")
        assert server.auth_headers == {f"Bearer {wrong}"}
    assert (judge.stats.calls, judge.stats.retries, judge.stats.failures) == (1, 0, 1)
    assert wrong not in str(exc.value) and wrong not in log.read_text()
    assert [json.loads(line)["attempts"] for line in log.read_text().splitlines()] == [3, 1]


def test_reasks_are_real_requests_recorded_and_replayed_from_the_cache(server: str, tmp_path: Path) -> None:
    """TouchStone (eval.py evaluate: up to 5 requests) and MLLM-Bench (evaluate.py: up to 3 rounds) send
    an identical request again when a reply cannot be read: each re-ask reaches the server, is counted,
    and a re-run replays every attempt from the cache without a single new request."""
    def run(cache: Path) -> dict:
        judge = JudgeClient("scripted-judge", server, api_key="sk-test", cache_dir=cache, log_path=tmp_path / "log.jsonl",
                            max_retries=0)
        out = {}
        for name in ("touchstone", "mllm_bench"):
            ad = get_adapter(name)
            items = ad.load(DATA / name)
            out[name] = ad.score(items, {it.id: "REASK MODEL answer" for it in items}, judge=judge)
        return out

    first = run(tmp_path / "cache")
    # every request was unreadable once: 2 items x 2 orders, each asked twice
    for name in ("touchstone", "mllm_bench"):
        assert (first[name].counts["requests"], first[name].counts["reasks"]) == (8, 4), name
    assert first["touchstone"].headline == pytest.approx(600.0)  # model 5 (round 1) and 7 (round 2) each time
    assert first["mllm_bench"].headline == 100.0 and first["mllm_bench"].counts["dropped_missing_vote"] == 0
    assert len(Handler.calls) == 16
    bodies = [json.dumps(c["messages"], sort_keys=True) for c in Handler.calls]
    assert len(set(bodies)) == 8  # the re-asks are the very same request
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {r["prompt_version"] for r in records} == {TOUCHSTONE_VERSION, MLLM_VERSION}
    again = run(tmp_path / "cache")
    assert len(Handler.calls) == 16  # nothing new: every attempt came from the cache
    for name in first:
        assert again[name].headline == first[name].headline and again[name].counts == first[name].counts

