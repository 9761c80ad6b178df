"""Which variant to ship for a device: the most accurate one inside its memory budget and latency targets.

Why a pure module: the decision is a rule over numbers the run already measured (peak RSS, TTFT, decode
tok/s, accuracy), so it takes the results' variant entries and the profile's limits and returns a dict;
no I/O, so the rule is tested on synthetic entries and re-applied to any saved results.json.

The rule, in order:
  1. candidates: every variant that ran (status ok) except the reference (it is the yardstick, not a
     shipping artefact) and those this host could not time (a latency target cannot be checked);
  2. a candidate fits when its measured peak RSS is within the memory budget, its median TTFT within
     ``targets.ttft_s`` and its median decode rate at least ``targets.decode_tok_s`` (targets the
     profile does not set are not checked);
  3. among those that fit: the highest accuracy, ties broken by lower peak RSS, then lower TTFT.
  4. nothing fits: no recommendation; each constraint that failed says by how much the closest variant
     missed it (the margin a deployer would have to win back), and each variant lists its own misses.

Accuracy is the primary benchmark's headline score of this run. A run without accuracy (random
weights, ``--benchmarks none``) uses a stand-in that the result names in ``accuracy_source``: the score
each precision measured in another run (``accuracy_from``, e.g. the trained tiny default's results), or,
as a last resort, bits per weight (more bits = closer to the reference, which holds within a family of
weight-only quantisers but not across them).

The Pareto front is over accuracy (max), TTFT (min) and peak memory (min), over every timed candidate
whether it fits or not: it shows what each step down in accuracy buys.
"""

from __future__ import annotations

from typing import Any

CONSTRAINTS = ("memory_budget", "ttft", "decode")


def primary_benchmark(variants: list[dict[str, Any]], benchmarks: list[dict[str, Any]]) -> str | None:
    """The first benchmark with a numeric headline score for some variant."""
    for b in benchmarks:
        if any(((v.get("accuracy") or {}).get(b["name"]) or {}).get("headline") is not None for v in variants):
            return b["name"]
    return None


def _lm_precision(name: str) -> str:
    """``gguf:Q4_K_M-VQ8_0`` -> ``gguf:Q4_K_M`` (the language model's precision, which dominates accuracy)."""
    return name.split("-", 1)[0]


def accuracy_table(variants: list[dict[str, Any]], benchmarks: list[dict[str, Any]],
                   accuracy_from: dict[str, Any] | None = None) -> tuple[dict[str, float | None], str]:
    """Each variant's accuracy figure and where it comes from (this run, another run's results, or bits)."""
    bench = primary_benchmark(variants, benchmarks)
    if bench:
        scores = {v["name"]: ((v.get("accuracy") or {}).get(bench) or {}).get("headline") for v in variants}
        return scores, f"measured: {bench} headline score of this run"
    if accuracy_from:
        ob = primary_benchmark(accuracy_from["variants"], accuracy_from["benchmarks"])
        if ob:
            other = {v["name"]: ((v.get("accuracy") or {}).get(ob) or {}).get("headline") for v in accuracy_from["variants"]}
            scores = {v["name"]: other.get(v["name"], other.get(_lm_precision(v["name"]))) for v in variants}
            where = accuracy_from.get("source") or "another run"
            return scores, (f"stand-in: the {ob} headline score the same format:precision measured in {where} "
                            f"(model {accuracy_from.get('config', {}).get('model', '?')}); this run measured no accuracy")
    scores = {v["name"]: v.get("bits_per_weight") for v in variants}
    return scores, ("stand-in: bits per weight (this run measured no accuracy and no other run's scores were given; "
                    "more bits are assumed closer to the reference)")


def _lat(v: dict[str, Any], metric: str) -> float | None:
    return ((v.get("latency") or {}).get(metric) or {}).get("median")


def _row(v: dict[str, Any], acc: float | None) -> dict[str, Any]:
    ttft = _lat(v, "ttft_ms")
    return {"variant": v["name"], "accuracy": acc, "ttft_s": ttft / 1000 if ttft is not None else None,
            "decode_tok_s": _lat(v, "decode_tok_s"), "peak_rss_mib": v.get("peak_rss_mb"),
            "bits_per_weight": v.get("bits_per_weight"), "size_mib": (v.get("size_bytes") or 0) / 2**20}


def misses(row: dict[str, Any], budget_mib: float, targets: dict[str, float]) -> list[dict[str, Any]]:
    """The constraints ``row`` fails, each with its limit, the measured value and the margin it misses by."""
    out = []
    checks = [("memory_budget", "peak_rss_mib", budget_mib, "MiB", 1), ("ttft", "ttft_s", targets.get("ttft_s"), "s", 1),
              ("decode", "decode_tok_s", targets.get("decode_tok_s"), "tok/s", -1)]
    for name, key, limit, unit, sign in checks:  # sign 1: at most the limit; -1: at least
        if limit is None:
            continue
        value = row[key]
        if value is None:
            out.append({"constraint": name, "limit": limit, "value": None, "by": None, "unit": unit,
                        "why": f"{key} not measured"})
        elif sign * (value - limit) > 0:
            out.append({"constraint": name, "limit": limit, "value": value, "by": abs(value - limit), "unit": unit})
    return out


def pareto_front(rows: list[dict[str, Any]]) -> list[str]:
    """Names of rows no other row dominates on accuracy (max), TTFT (min) and peak RSS (min)."""
    def key(r: dict[str, Any]) -> tuple[float, float, float]:
        return (-(r["accuracy"] if r["accuracy"] is not None else float("-inf")),
                r["ttft_s"] if r["ttft_s"] is not None else float("inf"),
                r["peak_rss_mib"] if r["peak_rss_mib"] is not None else float("inf"))

    keys = {r["variant"]: key(r) for r in rows}
    front = [n for n, k in keys.items()
             if not any(all(a <= b for a, b in zip(k2, k, strict=True)) and k2 != k for k2 in keys.values())]
    return sorted(front, key=lambda n: keys[n])


def recommend(variants: list[dict[str, Any]], benchmarks: list[dict[str, Any]], budget_gib: float,
              targets: dict[str, float] | None = None, reference: str = "pytorch:FP32",
              accuracy_from: dict[str, Any] | None = None, skipped: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The decision (see the module doc): ``recommendation`` (a row, or None), ``constraints_failed``
    (when None: per constraint the closest miss), ``pareto_front``, ``candidates`` and ``excluded``.

    ``skipped``: the run's variants not run because their size estimate was over the budget (results.json
    "skipped"); they count as memory misses at their estimate, so "nothing fits" says by how much even
    when nothing could be run."""
    targets = dict(targets or {})
    budget_mib = budget_gib * 1024
    scores, source = accuracy_table(variants, benchmarks, accuracy_from)
    rows, excluded = [], []
    for v in variants:
        if v.get("reference") or v["name"].lower() == reference.lower():
            excluded.append({"variant": v["name"], "why": "the reference (accuracy yardstick, not shipped)"})
        elif v.get("status") != "ok":
            excluded.append({"variant": v["name"], "why": f"status {v.get('status')}: {v.get('reason', '')}"[:200]})
        elif v.get("latency_unavailable") or _lat(v, "ttft_ms") is None:
            excluded.append({"variant": v["name"], "why": f"no latency on this host ({v.get('latency_unavailable') or 'not timed'})"})
        else:
            row = _row(v, scores.get(v["name"]))
            row["misses"] = misses(row, budget_mib, targets)
            row["fits"] = not row["misses"]
            rows.append(row)

    not_run = []
    for sk in skipped or []:
        if sk["variant"].lower() == reference.lower() or sk.get("est_memory_bytes") is None:
            continue
        est = sk["est_memory_bytes"] / 2**20
        not_run.append({"variant": sk["variant"], "estimated_mib": est,
                        "miss": {"constraint": "memory_budget", "limit": budget_mib, "value": est, "by": est - budget_mib,
                                 "unit": "MiB", "why": "size estimate before the run (not run)"}})

    def rank(r: dict[str, Any]) -> tuple[float, float, float]:
        return (-(r["accuracy"] if r["accuracy"] is not None else float("-inf")), r["peak_rss_mib"], r["ttft_s"])

    fitting = sorted((r for r in rows if r["fits"]), key=rank)
    out: dict[str, Any] = {"accuracy_source": source, "memory_budget_gib": budget_gib, "targets": targets,
                           "rule": "most accurate candidate within the memory budget (measured peak RSS) and the "
                                   "profile's TTFT/decode targets; ties: lower peak RSS, then lower TTFT",
                           "pareto_front": pareto_front(rows), "candidates": rows, "excluded": excluded,
                           "not_run_over_budget": not_run}
    if fitting:
        best = fitting[0]
        out["recommendation"] = {k: best[k] for k in ("variant", "accuracy", "ttft_s", "decode_tok_s", "peak_rss_mib",
                                                       "bits_per_weight", "size_mib")} | {
            "accuracy_source": source, "runner_up": fitting[1]["variant"] if len(fitting) > 1 else None}
        out["constraints_failed"] = []
        return out
    out["recommendation"] = None
    failed = []
    for c in CONSTRAINTS:
        ms = [(m, r["variant"]) for r in rows for m in r["misses"] if m["constraint"] == c]
        n = len(rows)
        if c == "memory_budget":  # the variants skipped on their estimate miss it too
            ms += [(s["miss"], s["variant"]) for s in not_run]
            n += len(not_run)
        if ms and len(ms) == n:  # every candidate misses it: the deployer must win back this margin
            m, who = min(ms, key=lambda t: t[0]["by"] if t[0]["by"] is not None else float("inf"))
            failed.append(m | {"closest": who, "all_fail": True})
    if not failed:  # each candidate fails something, but no single constraint fails them all
        for r in rows:
            failed += [m | {"closest": r["variant"], "all_fail": False} for m in r["misses"]]
    if not rows and not not_run:
        failed.append({"constraint": "candidates", "why": "no shippable variant was timed (only the reference, "
                       "failed or untimed variants)", "by": None})
    out["constraints_failed"] = failed
    return out


def _fmt_miss(m: dict[str, Any]) -> str:
    if m.get("constraint") == "candidates":
        return m["why"]
    if m.get("value") is None:
        return f"{m['constraint']}: {m.get('why', 'not measured')}"
    rel = "over" if m["constraint"] != "decode" else "under"
    return (f"{m['constraint']} ({m['value']:.1f} {m['unit']} vs {m['limit']:g} {m['unit']}, {m['by']:.1f} {m['unit']} "
            f"{rel}{', closest: ' + m['closest'] if m.get('closest') else ''})")


def paragraph(rec: dict[str, Any], device: str, host_threads: int) -> str:
    """The report's one-paragraph explanation of the decision."""
    t = rec["targets"]
    limits = [f"peak RSS ≤ {rec['memory_budget_gib']:g} GiB"] + (
        [f"TTFT ≤ {t['ttft_s']:g} s"] if "ttft_s" in t else []) + (
        [f"decode ≥ {t['decode_tok_s']:g} tok/s"] if "decode_tok_s" in t else [])
    n_fit = sum(r["fits"] for r in rec["candidates"])
    head = (f"Limits of the {device} profile: {', '.join(limits)}; latency and memory as measured on this host "
            f"({host_threads} threads). Accuracy: {rec['accuracy_source']}. {n_fit} of {len(rec['candidates'])} "
            f"timed candidate(s) fit (the reference and untimed variants are not candidates).")
    r = rec["recommendation"]
    if r is None:
        return (head + " **Nothing fits: no recommendation.** Failed: "
                + "; ".join(_fmt_miss(m) for m in rec["constraints_failed"]) + ".")
    acc = f"{r['accuracy']:.4g}" if r["accuracy"] is not None else "n/a"
    return (head + f" **Ship {r['variant']}**: accuracy {acc}, TTFT {r['ttft_s']:.2f} s, decode "
            f"{r['decode_tok_s']:.1f} tok/s, peak RSS {r['peak_rss_mib']:.0f} MiB — the most accurate that fits"
            + (f" (next: {r['runner_up']})" if r["runner_up"] else "") + ". "
            + ("It is on the Pareto front (accuracy, TTFT, memory)." if r["variant"] in rec["pareto_front"]
               else "It is not on the Pareto front: a variant outside the limits dominates it."))


def markdown_lines(rec: dict[str, Any] | None, device: str, host_threads: int) -> list[str]:
    """The report's Recommendation section: the paragraph and the Pareto/candidate table."""
    if rec is None:
        return []
    lines = ["## Recommendation", "", paragraph(rec, device, host_threads), "",
             "| variant | accuracy | TTFT s | decode tok/s | peak RSS MiB | Pareto | fits | misses |",
             "|---|---:|---:|---:|---:|---|---|---|"]
    for r in sorted(rec["candidates"], key=lambda r: (r["variant"] not in rec["pareto_front"], r["variant"])):
        acc = f"{r['accuracy']:.4g}" if r["accuracy"] is not None else "–"
        lines.append(f"| {r['variant']} | {acc} | {r['ttft_s']:.2f} | {r['decode_tok_s'] or 0:.1f} | "
                     f"{r['peak_rss_mib'] or 0:.0f} | {'front' if r['variant'] in rec['pareto_front'] else ''} | "
                     f"{'yes' if r['fits'] else 'no'} | {'; '.join(_fmt_miss(m) for m in r['misses']) or ''} |")
    lines += [f"- not a candidate: {e['variant']}: {e['why']}" for e in rec["excluded"]]
    lines += [f"- not run: {s['variant']}: estimated {s['estimated_mib']:.0f} MiB, over the budget by "
              f"{s['miss']['by']:.0f} MiB" for s in rec.get("not_run_over_budget", [])]
    lines += ["", "Pareto front: no other candidate is at least as accurate, as fast to the first token and as small in "
              "peak RSS. Rule: " + rec["rule"] + ".", ""]
    return lines
