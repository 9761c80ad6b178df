"""Paired intervals on accuracy deltas (bench/harness/confidence.py), their marking in the report and
--max-drop acting on them. Constructed items and answers only: no model, no files, seconds."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import bench.run as bench_run
from bench.benchmarks import get_adapter
from bench.benchmarks.base import Item
from bench.benchmarks.mmbench import CIRCULAR_OFFSET
from bench.benchmarks.pairwise_adapter import for_copies
from bench.harness import accuracy, confidence, report
from bench.harness.suites import Suite
from bench.harness.world_adapter import WorldHeldout


def _world(n: int) -> list[Item]:
    return [Item(id=f"q{i}", prompt="?", meta={"answer": "red", "qtype": ("colour", "shape")[i % 2]}) for i in range(n)]


def _answers(n: int, wrong: set[int]) -> dict[str, str]:
    return {f"q{i}": ("blue" if i in wrong else "Red.") for i in range(n)}


# -- the interval itself ---------------------------------------------------------------------------
def test_identical_answers_give_zero_width_interval_at_zero():
    ci = confidence.paired_mean_interval([1, 0, 1, 1, 0] * 20, [1, 0, 1, 1, 0] * 20, seed=3)
    assert (ci["point"], ci["lo"], ci["hi"], ci["excludes_zero"]) == (0.0, 0.0, 0.0, False)
    items = _world(50)
    ref = _answers(50, {1, 2, 3})
    out = confidence.paired_score_intervals(WorldHeldout(), items, ref, {"same": dict(ref)}, seed=1)
    assert (out["same"]["lo"], out["same"]["hi"], out["same"]["excludes_zero"]) == (0.0, 0.0, False)


def test_discordant_pairs_match_the_binomial_expectation():
    """n=400, the variant alone right on 10 items, the reference alone right on 30: Δ = -5 points with
    standard error sqrt(((b+c)/n - ((b-c)/n)^2) / n) = 1.56 points; the percentile interval must sit
    within 0.5 points of the normal one (-8.06, -1.94)."""
    n, b, c = 400, 10, 30
    var = np.ones(n)
    ref = np.ones(n)
    var[:c] = 0  # reference right, variant wrong
    ref[c:c + b] = 0  # variant right, reference wrong
    ci = confidence.paired_mean_interval(var, ref, resamples=4000, seed=0)
    se = 100 * math.sqrt(((b + c) / n - ((b - c) / n) ** 2) / n)
    assert ci["point"] == pytest.approx(-5.0)
    assert ci["lo"] == pytest.approx(-5.0 - 1.96 * se, abs=0.5) and ci["hi"] == pytest.approx(-5.0 + 1.96 * se, abs=0.5)
    assert ci["excludes_zero"] is True


def test_one_point_loss_is_detectable_at_the_default_world_size_not_at_96():
    """The world default (400): 4 answers flipped right -> wrong, nothing else changed, reads [-2.0, -0.25]
    (P(no flipped item drawn) = 0.99^400 = 0.018 < 0.025); at the old 96 one flip reads [-3.1, 0]."""
    from bench.harness.suites import DEFAULT_LIMITS

    n = DEFAULT_LIMITS["world"]
    assert n == 400
    ci = confidence.paired_mean_interval([0] * (n // 100) + [1] * (n - n // 100), [1] * n, seed=0)
    assert ci["point"] == pytest.approx(-1.0) and ci["hi"] < 0 and ci["excludes_zero"]
    assert ci["lo"] == pytest.approx(-2.0, abs=0.3) and ci["hi"] == pytest.approx(-0.25, abs=0.01)
    small = confidence.paired_mean_interval([0] + [1] * 95, [1] * 96, seed=0)
    assert small["hi"] == 0.0 and not small["excludes_zero"] and small["lo"] == pytest.approx(-3.125, abs=0.01)


def test_seeded_reproducibility():
    items = _world(80)
    ref, var = _answers(80, {0, 5, 9}), _answers(80, {0, 1, 2, 3, 4, 11, 12})
    a = confidence.paired_score_intervals(WorldHeldout(), items, ref, {"v": var}, seed=7)["v"]
    b = confidence.paired_score_intervals(WorldHeldout(), items, ref, {"v": var}, seed=7)["v"]
    c = confidence.paired_score_intervals(WorldHeldout(), items, ref, {"v": var}, seed=8)["v"]
    assert a == b and a["seed"] == 7 and a["resamples"] == confidence.DEFAULT_RESAMPLES
    assert (c["lo"], c["hi"]) != (a["lo"], a["hi"]) or c["seed"] != a["seed"]
    assert confidence.bench_seed(0, "world") == confidence.bench_seed(0, "world") != confidence.bench_seed(0, "mme")


def test_per_item_fast_path_equals_the_official_score_per_resample():
    """The vectorised path (world's item_scores) gives the same interval as recomputing score() on every
    resample: same draws, same headline rule."""

    class Slow(WorldHeldout):
        item_scores = None  # type: ignore[assignment]

    items = _world(60)
    ref, var = _answers(60, {0, 7}), _answers(60, {0, 1, 2, 3, 30})
    fast = confidence.paired_score_intervals(WorldHeldout(), items, ref, {"v": var}, resamples=300, seed=2)["v"]
    slow = confidence.paired_score_intervals(Slow(), items, ref, {"v": var}, resamples=300, seed=2)["v"]
    assert fast["point"] == pytest.approx(slow["point"]) == pytest.approx(-5.0)
    assert fast["lo"] == pytest.approx(slow["lo"], abs=1e-9) and fast["hi"] == pytest.approx(slow["hi"], abs=1e-9)


def test_missing_answers_count_as_the_official_rule_counts_them():
    items = _world(40)
    ref = _answers(40, set())
    var = {k: v for k, v in ref.items() if k not in ("q0", "q1")}  # two unanswered -> wrong, as score() has it
    ci = confidence.paired_score_intervals(WorldHeldout(), items, ref, {"v": var}, seed=0)["v"]
    assert ci["point"] == pytest.approx(-5.0) and ci["hi"] <= 0


# -- benchmarks whose score is not a per-item mean ---------------------------------------------------
def _mme(pairs: int) -> list[Item]:
    items = []
    for k in range(pairs):
        for j, gt in enumerate(("yes", "no")):
            items.append(Item(id=f"existence/{k}.png/{2 * k + j}", prompt="?", group=f"existence/{k}",
                              meta={"subtask": "existence", "gt": gt, "gt_text": gt, "question": "?", "image_name": f"{k}"}))
    return items


def test_mme_interval_on_its_own_scale():
    """MME's headline is 100 x acc + 100 x acc+ summed over subtasks: one wrong answer in 20 pairs costs
    2.5 + 5 = 7.5 points; the pair is the resampling unit, so the interval is a multiple of -7.5 reaching 0."""
    adapter, items = get_adapter("mme"), _mme(20)
    ref = {it.id: it.meta["gt"] for it in items}
    var = dict(ref, **{items[0].id: "no"})
    out = confidence.paired_score_intervals(adapter, items, ref, {"v": var, "same": dict(ref)}, seed=0)
    assert out["same"]["lo"] == out["same"]["hi"] == 0.0
    v = out["v"]
    assert v["point"] == pytest.approx(-7.5) and v["hi"] == 0.0 and -30.0 <= v["lo"] <= -15.0
    assert not v["excludes_zero"]
    # a unit drawn twice counts twice: two copies of pair 0 are two images to the official rule
    copies = [adapter.resample_copy(it, d) for d in (0, 1) for it in items[:2]]
    assert len({c.group for c in copies}) == 2 and adapter.score(copies, {}).counts["images"] == 2


def _mmbench(questions: int) -> list[Item]:
    items = []
    for base in range(questions):
        for circ, answer in enumerate(("A", "B")):  # two circular copies, options rotated
            idx = base + circ * CIRCULAR_OFFSET
            opts = {"A": "cat", "B": "dog"} if circ == 0 else {"A": "dog", "B": "cat"}
            items.append(Item(id=str(idx), prompt="?", group=str(base),
                              meta={"index": idx, "options": opts, "answer": answer, "question": "?", "category": "c"}))
    return items


def test_mmbench_circular_copies_stay_together_and_apart():
    adapter, items = get_adapter("mmbench"), _mmbench(10)
    ref = {it.id: it.meta["answer"] for it in items}
    var = dict(ref, **{str(CIRCULAR_OFFSET): "A"})  # question 0's second copy wrong: CircularEval fails question 0
    out = confidence.paired_score_intervals(adapter, items, ref, {"v": var, "same": dict(ref)}, seed=0)
    assert out["v"]["point"] == pytest.approx(-10.0) and out["v"]["hi"] <= 0.0
    assert out["same"]["lo"] == out["same"]["hi"] == 0.0
    twice = [adapter.resample_copy(it, d) for d in (0, 1) for it in items[:2]]
    assert {c.meta["index"] % CIRCULAR_OFFSET for c in twice} == {0, 1}
    assert adapter.score(twice, {c.id: c.meta["answer"] for c in twice}).headline == 100.0


def test_pairwise_copies_find_their_baseline_answers():
    adapter = get_adapter("vicuna80")
    it = Item(id="7", prompt="?", meta={"category": "writing", "question": "?", "question_id": 7})
    copy = adapter.resample_copy(it, 3)
    assert copy.id == "7#3" and copy.meta["resampled_from"] == "7"
    assert for_copies({"7": "base answer"}, [copy]) == {"7": "base answer", "7#3": "base answer"}
    assert for_copies({"7": "x"}, [it]) == {"7": "x"}


def test_memo_judge_asks_each_request_once_and_keeps_failures():
    calls = []

    class Judge:
        model = "j"

        def ask(self, prompt, **options):
            calls.append((prompt, options.get("attempt", 0)))
            if prompt == "down":
                raise RuntimeError("judge down")
            return f"reply to {prompt}"

    memo = confidence.MemoJudge(Judge())
    assert memo.ask("p", tag="mmvet:q1", attempt=0) == memo.ask("p", tag="mmvet:q1#4", attempt=0) == "reply to p"
    memo.ask("p", tag="x", attempt=1)  # a re-ask is a different request
    for _ in range(2):
        with pytest.raises(RuntimeError):
            memo.ask("down")
    assert calls == [("p", 0), ("p", 1), ("down", 0)]


def test_no_judge_no_interval():
    adapter = get_adapter("mmvet")
    items = [Item(id="a", prompt="?", meta={"question": "?", "answer": "x", "capability": ["rec"]})]
    assert confidence.paired_score_intervals(adapter, items, {"a": "x"}, {"v": {"a": "y"}})["v"] is None


# -- the harness: deltas, report, CSV, --max-drop ---------------------------------------------------
def _entry(name: str, preds: dict[str, str], items: list[Item]) -> dict:
    fmt, prec = name.split(":")
    score = WorldHeldout().score(items, preds).headline
    return {"name": name, "format": fmt, "precision": prec, "status": "ok", "reference": fmt == "pytorch",
            "predictions": {"world": preds}, "accuracy": {"world": {"headline": score, "status": "ok"}}}


def _variants() -> list[dict]:
    items = _world(400)
    ref = _answers(400, set(range(0, 400, 10)))  # 90% right
    noisy = _answers(400, (set(range(0, 400, 10)) | {1, 3}) - {0})  # +1 -> -2: Δ -0.25, noise
    damaged = _answers(400, set(range(0, 400, 10)) | set(range(1, 80, 4)))  # 20 more wrong: Δ -5
    vs = [_entry("pytorch:FP32", ref, items), _entry("gguf:Q8_0", noisy, items), _entry("gguf:Q4_0", damaged, items)]
    accuracy.add_deltas(vs, "pytorch:FP32", [Suite("world", WorldHeldout(), items)])
    return vs


def test_add_deltas_fills_interval_significance_and_agreement_count():
    vs = _variants()
    q8, q4 = vs[1]["accuracy"]["world"], vs[2]["accuracy"]["world"]
    assert q8["delta"] == pytest.approx(-0.25) and q8["significant"] is False and q8["delta_ci"]["lo"] < 0 < q8["delta_ci"]["hi"]
    assert q4["delta"] == pytest.approx(-5.0) and q4["significant"] is True and q4["delta_ci"]["hi"] < 0
    assert q4["agreement"]["same"] == 380 and q4["agreement"]["n"] == 400
    assert "delta_ci" not in vs[0]["accuracy"]["world"]  # the reference has no interval against itself


def _results(vs: list[dict]) -> dict:
    from bench.harness.profiles import load_profile

    prof = load_profile("mobile")
    return {"device": {**prof.__dict__, "host_threads": 2, "cpus": [0, 1]}, "reference": "pytorch:FP32",
            "config": {"warmup": 1, "repeats": 3, "latency_tokens": 32, "seed": 0}, "bandwidth_gbs": 10.0,
            "judge": None, "judge_base_url": None, "variants": vs, "skipped": [],
            "benchmarks": [{"name": "world", "data_root": "/w", "limit": 400, "n_items": 400, "status": "ok",
                            "max_new_tokens": 8, "judged": False}],
            "host": {"cpu": "c", "logical_cpus": 2, "usable_cpus": 2, "ram_gib": 8.0, "os": "linux",
                     "load_avg": (0.0, 0.0, 0.0), "versions": {}}, "log": [], "elapsed_s": 1.0}


def test_report_marks_deltas_whose_interval_excludes_zero(tmp_path):
    res = _results(_variants())
    md = report.markdown(res)
    q4 = res["variants"][2]["accuracy"]["world"]["delta_ci"]
    assert f"85.0 (-5.0* [{q4['lo']:+.1f}, {q4['hi']:+.1f}]; 380/400 same)" in md
    q8 = res["variants"][1]["accuracy"]["world"]["delta_ci"]
    assert f"89.8 (-0.2 [{q8['lo']:+.1f}, {q8['hi']:+.1f}]; 397/400 same)" in md
    assert "paired percentile bootstrap over items" in md and "excludes zero" in md
    report.write_csv(res, tmp_path)
    rows = {r["variant"]: r for r in csv.DictReader((tmp_path / "results.csv").open())}
    assert rows["gguf:Q4_0"]["delta_significant:world"] == "True" and rows["gguf:Q8_0"]["delta_significant:world"] == "False"
    assert float(rows["gguf:Q4_0"]["delta_hi:world"]) < 0 and rows["gguf:Q4_0"]["agree_same:world"] == "380"


def test_drop_verdicts_act_on_the_interval():
    vs = _variants()
    got = {d["variant"]: d for d in accuracy.drop_verdicts(vs, 0.1)}
    assert got["gguf:Q8_0"]["fails"] is False and "within noise" in got["gguf:Q8_0"]["why"]
    assert got["gguf:Q4_0"]["fails"] is True
    assert [d["variant"] for d in accuracy.drop_verdicts(vs, 6.0)] == []  # -5 is within a 6-point budget
    no_ci = [{"name": "x:Y", "accuracy": {"world": {"delta": -3.0, "delta_ci": None}}}]
    assert accuracy.drop_verdicts(no_ci, 1.0)[0]["fails"] is True  # no interval: the point estimate decides


def _no_files(monkeypatch) -> None:
    """The synthetic variants have no latency to plot and no benchmark data to write submissions from."""
    monkeypatch.setattr("bench.benchmarks.submission.write_submissions", lambda results, out: out)
    monkeypatch.setattr("bench.harness.plot.write_plot", lambda results, out: out)


@pytest.mark.parametrize(("max_drop", "code"), [(0.1, 3), (6.0, 0)])
def test_max_drop_exit_code_uses_the_interval(tmp_path, monkeypatch, max_drop, code):
    import bench.harness.runner as runner

    monkeypatch.setattr(runner, "execute", lambda cfg: _results(_variants()))
    _no_files(monkeypatch)
    assert bench_run.main(["--output-dir", str(tmp_path), "--max-drop", str(max_drop)]) == code
    md = (tmp_path / "report.md").read_text()
    assert f"--max-drop {max_drop}" in md


def test_max_drop_passes_when_the_only_loss_is_noise(tmp_path, monkeypatch):
    import bench.harness.runner as runner

    vs = [v for v in _variants() if v["name"] != "gguf:Q4_0"]
    monkeypatch.setattr(runner, "execute", lambda cfg: _results(vs))
    _no_files(monkeypatch)
    assert bench_run.main(["--output-dir", str(tmp_path), "--max-drop", "0.1"]) == 0
    assert "within noise: gguf:Q8_0 on world" in (tmp_path / "report.md").read_text()


# -- export/check.py's held-out delta ----------------------------------------------------------------
def test_check_heldout_delta_gets_the_interval_and_same_count():
    from allava.evaluate import HeldoutItem
    from export.check import heldout_interval
    from export.parity import format_table

    items = [HeldoutItem(f"h{i}", None, "?", "red", "colour") for i in range(200)]
    ref = {it.id: "red" for it in items} | {"h0": "blue", "h1": "blue"}
    var = dict(ref, h0="red")  # +1 question of 200: +0.5, noise
    got = heldout_interval(items, ref, var)
    lo, hi = got["heldout_delta_ci"]
    assert lo == 0.0 and hi == pytest.approx(1.5) and got["heldout_delta_significant"] is False  # Poisson(1) tail: 3 draws
    assert got["heldout_same_count"] == 199 and "bootstrap" in got["heldout_delta_ci_method"]
    table = format_table({"onnx": {"summary": {"n_prompts": 20, "heldout_delta": 0.5, **got}}})
    assert "heldout_delta_ci" in table and "[+0.0, +1.5]" in table and "199" in table
