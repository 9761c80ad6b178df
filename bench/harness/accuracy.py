"""Scores per variant per benchmark, deltas against the reference, and agreement with its outputs.

Why agreement as well as scores: on a small or judge-less benchmark the score barely moves while the
answers may still change; exact and token-level agreement with the full-precision model's own
outputs show how much a quantized variant really departs from it (and need no judge).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from bench.benchmarks import ScoreResult
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
    return {"exact": 100.0 * exact / len(ids), "token_f1": 100.0 * f1 / len(ids), "n": len(ids)}


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


def add_deltas(variants: list[dict[str, Any]], ref_name: str | None, suites: list[Suite]) -> None:
    """Fill ``delta`` (points vs the reference) and ``agreement`` in every variant's accuracy entries."""
    ref = next((v for v in variants if v["name"] == ref_name and v.get("status") == "ok"), None)
    for v in variants:
        acc = v.get("accuracy") or {}
        pooled_exact = pooled_f1 = 0.0
        pooled_n = 0
        for s in suites:
            entry = acc.get(s.name)
            if entry is None:
                continue
            ref_entry = (ref or {}).get("accuracy", {}).get(s.name) if ref else None
            h, rh = entry.get("headline"), (ref_entry or {}).get("headline")
            entry["delta"] = (h - rh) if (h is not None and rh is not None) else None
            if ref is not None and v is not ref:
                ag = agreement(v["predictions"].get(s.name, {}), ref["predictions"].get(s.name, {}))
                entry["agreement"] = ag
                if ag:
                    pooled_exact += ag["exact"] * ag["n"]
                    pooled_f1 += ag["token_f1"] * ag["n"]
                    pooled_n += ag["n"]
        v["agreement"] = ({"exact": pooled_exact / pooled_n, "token_f1": pooled_f1 / pooled_n, "n": pooled_n}
                          if pooled_n else None)


def worst_drop(variants: list[dict[str, Any]]) -> tuple[float, str] | None:
    """The largest loss (positive points) of any variant on any scored benchmark, and where."""
    worst: tuple[float, str] | None = None
    for v in variants:
        for bench, entry in (v.get("accuracy") or {}).items():
            d = entry.get("delta")
            if d is not None and (worst is None or -d > worst[0]):
                worst = (-d, f"{v['name']} on {bench}")
    return worst
