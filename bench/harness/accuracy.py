"""Scores per variant per benchmark, deltas against the reference with their paired intervals, and
agreement with the reference's outputs.

Why agreement as well as scores: on a small or judge-less benchmark the score barely moves while the
answers may still change; exact and token-level agreement with the full-precision model's own
outputs show how much a quantized variant really departs from it (and need no judge). Why an
interval on every delta: on 96 items one flipped answer is a point, so a reader (and ``--max-drop``)
must see whether a delta is outside what resampling the items moves it by (bench/harness/confidence.py).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from bench.benchmarks import ScoreResult
from bench.harness import confidence
from bench.harness.suites import Suite

_WORD = re.compile(r"\w+", re.UNICODE)


def _norm(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style bag-of-words F1 between two answers (1.0 when both are empty)."""
    p, r = _WORD.findall(pred.lower()), _WORD.findall(ref.lower())
    if not p and not r:
        return 1.0
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def agreement(preds: dict[str, str], ref: dict[str, str]) -> dict[str, float] | None:
    """Exact (normalised) and token-F1 agreement, percent, over items both answered."""
    ids = [i for i in preds if i in ref]
    if not ids:
        return None
    exact = sum(_norm(preds[i]) == _norm(ref[i]) for i in ids)
    f1 = sum(token_f1(preds[i], ref[i]) for i in ids)
    return {"exact": 100.0 * exact / len(ids), "token_f1": 100.0 * f1 / len(ids), "n": len(ids), "same": exact}


def score_suite(suite: Suite, preds: dict[str, str], judge: Any) -> dict[str, Any]:
    """The adapter's official score; a scorer or judge failure becomes a status, never a crash."""
    if suite.adapter is None or not suite.items:
        return {"headline": None, "status": suite.status if suite.status != "ok" else "not scored: no items"}
    try:
        res: ScoreResult = suite.adapter.score(suite.items, preds, judge)
    except Exception as exc:  # noqa: BLE001
        return {"headline": None, "status": f"scoring failed: {type(exc).__name__}: {exc}"}
    return {"headline": res.headline, "status": res.status, "scorer": res.scorer, "judge": res.judge,
            "prompt_version": res.prompt_version, "breakdown": res.breakdown, "counts": res.counts,
            "details": res.details}  # details: judged scorers' judgments (prompt, reply, re-asks) for the review files


def add_deltas(variants: list[dict[str, Any]], ref_name: str | None, suites: list[Suite], judge: Any = None,
               seed: int = 0, resamples: int = confidence.DEFAULT_RESAMPLES) -> None:
    """Fill ``delta`` (points vs the reference), ``delta_ci`` (its paired interval, or None), ``significant``
    (the interval excludes zero) and ``agreement`` in every variant's accuracy entries.

    The interval resamples the suite's items and recomputes the benchmark's official score for the
    variant and the reference on each resample (confidence.paired_score_intervals); a suite without
    an adapter or items (or a judged one without a judge) has a delta without an interval."""
    ref = next((v for v in variants if v["name"] == ref_name and v.get("status") == "ok"), None)
    cis: dict[str, dict[str, Any]] = {}
    if ref is not None:
        for s in suites:
            adapter, items = getattr(s, "adapter", None), getattr(s, "items", None)
            others = {v["name"]: v["predictions"].get(s.name, {}) for v in variants
                      if v is not ref and v.get("status") == "ok" and (v.get("accuracy") or {}).get(s.name, {}).get("headline") is not None}
            if adapter is None or not items or not others or (ref.get("accuracy") or {}).get(s.name, {}).get("headline") is None:
                continue
            cis[s.name] = confidence.paired_score_intervals(
                adapter, items, ref["predictions"].get(s.name, {}), others, judge, resamples=resamples,
                seed=confidence.bench_seed(seed, s.name))
    for v in variants:
        acc = v.get("accuracy") or {}
        pooled_exact = pooled_f1 = 0.0
        pooled_n = pooled_same = 0
        for s in suites:
            entry = acc.get(s.name)
            if entry is None:
                continue
            ref_entry = (ref or {}).get("accuracy", {}).get(s.name) if ref else None
            h, rh = entry.get("headline"), (ref_entry or {}).get("headline")
            entry["delta"] = (h - rh) if (h is not None and rh is not None) else None
            if ref is not None and v is not ref:
                ci = cis.get(s.name, {}).get(v["name"]) if entry["delta"] is not None else None
                entry["delta_ci"] = ci
                entry["significant"] = confidence.excludes_zero(ci)
                ag = agreement(v["predictions"].get(s.name, {}), ref["predictions"].get(s.name, {}))
                entry["agreement"] = ag
                if ag:
                    pooled_exact += ag["exact"] * ag["n"]
                    pooled_f1 += ag["token_f1"] * ag["n"]
                    pooled_n += ag["n"]
                    pooled_same += ag["same"]
        v["agreement"] = ({"exact": pooled_exact / pooled_n, "token_f1": pooled_f1 / pooled_n, "n": pooled_n,
                           "same": pooled_same} if pooled_n else None)


MAX_DROP_RULE = ("a variant fails when it loses more than --max-drop points on a benchmark (point estimate) and the "
                 "loss is not noise: the upper end of the delta's paired 95% interval is below zero; a delta without "
                 "an interval is judged on its point estimate")


def worst_drop(variants: list[dict[str, Any]]) -> tuple[float, str] | None:
    """The largest loss (positive points) of any variant on any scored benchmark, and where."""
    worst: tuple[float, str] | None = None
    for v in variants:
        for bench, entry in (v.get("accuracy") or {}).items():
            d = entry.get("delta")
            if d is not None and (worst is None or -d > worst[0]):
                worst = (-d, f"{v['name']} on {bench}")
    return worst


def drop_verdicts(variants: list[dict[str, Any]], limit: float) -> list[dict[str, Any]]:
    """Every delta that loses more than ``limit`` points, with whether it fails ``--max-drop``
    (MAX_DROP_RULE).

    Why the interval takes part: on 96 items a -5 point delta can be noise (the issue that added it
    saw -5.2 on the bench and +0.5 on 200 other questions for one variant), so a loss only fails when
    its interval excludes zero; the alternative rule, failing only when the whole interval lies below
    -limit, would on a small set never fail (at 96 items an interval is ~4-8 points wide)."""
    out = []
    for v in variants:
        for bench, entry in (v.get("accuracy") or {}).items():
            d = entry.get("delta")
            if d is None or -d <= limit or v.get("reference"):
                continue
            ci = entry.get("delta_ci")
            fails = True if not ci else ci["hi"] < 0
            out.append({"variant": v["name"], "benchmark": bench, "drop": -d, "fails": fails,
                        "ci": [ci["lo"], ci["hi"]] if ci else None,
                        "why": ("no interval: judged on the point estimate" if not ci else
                                f"95% interval [{ci['lo']:+.2f}, {ci['hi']:+.2f}] "
                                + ("lies below zero" if fails else "includes zero: within noise"))})
    return out
