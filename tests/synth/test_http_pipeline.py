"""Acceptance: 200 images through a scripted chat-completions server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

from allava.openai_stub import StubServer
from allava.schema import load_records
from tests.synth.conftest import API_KEY, laion_key, make_images, run_cli

PRICE_IN, PRICE_OUT = 2.5, 10.0


def behaviour_for(i: int) -> str:
    """Exact shares over 200 inputs: 10% 429, 5% 500, 5% timeout, 5% malformed, 5% refusal, 2.5% truncated."""
    if i % 20 in (0, 1):
        return "429"
    return {2: "500", 3: "timeout", 4: "malformed", 5: "refuse"}.get(i % 20, "truncate" if i % 40 == 6 else "ok")


def test_scripted_server_200_images(tmp_path: Path) -> None:
    paths = make_images(tmp_path / "images", 200)
    script = {laion_key(p): behaviour_for(i) for i, p in enumerate(paths)}
    out = tmp_path / "out"
    with StubServer(script, retry_after="1", hang=1.5, api_key=API_KEY, lifetime=120) as server:
        proc = run_cli(
            "laion", "--images", str(tmp_path / "images"), "--base-url", server.base_url, "--model", "stub-model",
            "--output-dir", str(out), "--concurrency", "16", "--timeout", "0.6", "--backoff-base", "0.01",
            "--price-in", str(PRICE_IN), "--price-out", str(PRICE_OUT),
        )
        assert proc.returncode == 0, proc.stderr
        usage, attempts, sent, auths = dict(server.usage), dict(server.attempts), dict(server.sent), set(server.auth_headers)

    caps, _ = load_records(out / "ALLaVA-Caption-LAION.json")
    insts, _ = load_records(out / "ALLaVA-Instruct-LAION.json")
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]

    bad = {k for k, b in script.items() if b in ("malformed", "refuse", "truncate")}
    good = set(script) - bad
    cap_keys = [r.id.removeprefix("cap_") for r in caps]
    inst_keys = [r.id.removeprefix("inst_") for r in insts]
    rej_keys = [r["key"] for r in rejects]
    # every input ends in exactly one of dataset or rejects; zero duplicates
    assert len(cap_keys) == len(set(cap_keys)) and len(inst_keys) == len(set(inst_keys))
    assert len(rej_keys) == len(set(rej_keys))
    assert set(cap_keys) == set(inst_keys) == good
    assert set(rej_keys) == bad
    assert not set(cap_keys) & set(rej_keys) and set(cap_keys) | set(rej_keys) == set(script)
    reasons = {r["key"]: r["reason"] for r in rejects}
    for k in bad:
        want = {"malformed": "malformed", "refuse": "refused", "truncate": "truncated"}[script[k]]
        assert reasons[k].startswith(want), reasons[k]

    # one paid 200 per input, and the journal holds exactly one response per input
    assert sorted(sent) == sorted(script) and set(sent.values()) == {1}
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    responses = [e["key"] for e in journal if e["status"] == "response"]
    assert sorted(responses) == sorted(script)

    # retries happened and honoured Retry-After
    for k, b in script.items():
        if b == "429":
            (t0, s0), (t1, s1) = attempts[k][:2]
            assert (s0, s1) == (429, 200) and t1 - t0 >= 0.95
        if b in ("500", "timeout"):
            assert len(attempts[k]) == 2

    # token and cost totals equal the scripted usage
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt_tokens"] == usage["prompt_tokens"]
    assert summary["completion_tokens"] == usage["completion_tokens"]
    expected_cost = (usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT) / 1e6
    assert abs(summary["cost_usd"] - expected_cost) < 1e-5
    assert summary["this_run"]["retries"]["http_429"] == 20
    assert summary["accepted"] == len(good) and summary["rejected"] == len(bad) and summary["pending"] == 0

    # output trains: records validate and every image they name exists, relative to the JSON file
    for rec in caps + insts:
        assert (out / rec.image).is_file()
        assert rec.extra["prompt_id"] == "laion_v1"
    assert insts[0].conversations[0].value.startswith("<image>\n")

    # the key was used on the wire but is nowhere in what we wrote or printed
    assert f"Bearer {API_KEY}" in auths
    assert API_KEY not in proc.stdout + proc.stderr
    for f in out.rglob("*"):
        if f.is_file():
            assert API_KEY.encode() not in f.read_bytes(), f
