"""Unit tests: parsing, backoff, journal, inputs, pricing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from allava.openai_client import RetryPolicy, retry_after_seconds
from synth.inputs import rows_from_folder, rows_from_manifest, scan
from synth.journal import Journal, read_journal
from synth.parsing import Rejected, parse_response
from synth.pricing import load_price
from synth.prompts import DEFAULT_PROMPTS, load_prompt

GOOD = """```
<Caption>A red cube stands left of a blue sphere on a wooden table.</Caption>
<questions><q>How many objects?</q><q>Which is left of the sphere?</q></questions>
<chosen>Which is left of the sphere?</chosen>
<answer>The cube, because it is on the left.</answer>
```"""


def test_parse_good_with_fence_case_and_text_choice() -> None:
    p = parse_response("laion", GOOD)
    assert p.question == "Which is left of the sphere?" and p.answer.startswith("The cube")


@pytest.mark.parametrize(
    ("text", "finish", "reason"),
    [
        (GOOD, "length", "truncated"),
        ("<caption>A long caption that never ends", "stop", "truncated"),
        ("<refuse>personal data</refuse>", "stop", "refused"),
        ("I'm sorry, but I can't help with that.", "stop", "refused"),
        ("Just some chatter.", "stop", "malformed"),
        (GOOD.replace("Which is left of the sphere?</chosen>", "7</chosen>"), "stop", "malformed"),
        ("<caption>A red cube stands left of a blue sphere.</caption><answer></answer>", "stop", "malformed"),
        ("", "stop", "malformed"),
        (GOOD, "content_filter", "refused"),
    ],
)
def test_parse_rejects(text: str, finish: str, reason: str) -> None:
    with pytest.raises(Rejected) as exc:
        parse_response("laion", text, finish)
    assert exc.value.reason.startswith(reason)


def test_parse_vflan_and_text() -> None:
    assert parse_response("vflan", "<caption>A red cube stands on a table.</caption><answer>B</answer>").answer == "B"
    assert parse_response("text", "<answer>42 because 6*7</answer>").answer == "42 because 6*7"


def test_backoff_bounds_and_retry_after() -> None:
    pol = RetryPolicy(max_attempts=5, base=1.0, cap=8.0, max_retry_after=30.0)
    rng = random.Random(0)
    for attempt in range(1, 10):
        d = pol.delay(attempt, None, rng)
        assert 0 <= d <= min(8.0, 2 ** (attempt - 1))
    assert 2.0 <= pol.delay(1, 2.0, rng) <= 2.3
    assert pol.delay(1, 1e6, rng) <= 31.0
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_journal_torn_tail_first_response_wins_failures_retry(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    lines = [{"key": "a", "status": "failed", "reason": "x"}, {"key": "a", "status": "response", "text": "1"},
             {"key": "a", "status": "response", "text": "2"}, {"key": "b", "status": "failed", "reason": "y"}]
    path.write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"key": "c", "stat')
    j = Journal(path)
    state = j.open()
    assert state.responses["a"]["text"] == "1" and "a" not in state.failures and "b" in state.failures
    j.append({"key": "c", "status": "response", "text": "3"})
    j.close()
    assert read_journal(path).responses["c"]["text"] == "3" and read_journal(path).torn_lines == 0


def test_journal_lock(tmp_path: Path) -> None:
    from synth.journal import JournalLocked

    a, b = Journal(tmp_path / "j.jsonl"), Journal(tmp_path / "j.jsonl")
    a.open()
    with pytest.raises(JournalLocked):
        b.open()
    a.close()


def test_scan_filters_dedups_and_counts(tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (600, 600), "red").save(d / "a.png")
    (d / "b.png").write_bytes((d / "a.png").read_bytes())  # duplicate
    Image.new("RGB", (600, 300), "blue").save(d / "small.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (d / "a.txt").write_text("alt text of a")
    res = scan("laion", list(rows_from_folder(d)), tmp_path / "cache", 512)
    assert res.counts == {"inputs": 4, "too_small": 1, "undecodable": 1, "duplicates": 1, "missing": 0, "kept": 1}
    assert res.items[0].caption == "alt text of a"
    assert len(res.rejects) == 3


def test_manifest_csv_laion_columns_and_vflan(tmp_path: Path) -> None:
    Image.new("RGB", (600, 600), "red").save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,TEXT,instruction\na.png,a red square,What colour?\nmissing.png,x,y\n")
    res = scan("vflan", rows_from_manifest(tmp_path / "m.csv"), tmp_path / "cache", 512)
    assert res.counts["kept"] == 1 and res.counts["missing"] == 1
    assert res.items[0].caption == "a red square" and res.items[0].instruction == "What colour?"


def test_prompts_and_prices() -> None:
    for pid in DEFAULT_PROMPTS.values():
        p = load_prompt(pid)
        assert p.id == pid and "<refuse>" in p.user and "<answer>" in p.user
        assert "personal information" in p.user and "discriminatory" in p.user
    assert "{instruction}" in load_prompt("vflan_v1").user
    price = load_price("gpt-4o-2024-11-20")  # longest-prefix match
    assert price.known and price.input_per_m == 2.5
    assert not load_price("my-local-llava").known and load_price("my-local-llava").cost(10**6, 10**6) == 0
