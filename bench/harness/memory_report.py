"""The report's "Memory breakdown" section: one row per variant, from results.json's ``memory``.

Why its own module: the breakdown is the answer to "why does this variant not fit", so it shows
every component with how it was measured (bench/harness/memory.py), and report.py only calls
``markdown_lines``.
"""

from __future__ import annotations

from typing import Any


def markdown_lines(results: dict[str, Any]) -> list[str]:
    """Markdown lines of the section ([] when no variant carries a breakdown)."""
    budget = (results.get("device") or {}).get("memory_budget_gib")
    rows = [v for v in results.get("variants", []) if v.get("memory")]
    if not rows:
        return []
    lines = ["## Memory breakdown (MiB; the components add up to the measured peak RSS)", ""]
    if budget:
        lines.append(f"Budget: {budget} GiB ({budget * 1024:.0f} MiB). Method per row: bench/harness/memory.py.")
        lines.append("")
    names: list[str] = []  # every component any variant has, in order of first appearance
    for v in rows:
        names += [c["name"] for c in v["memory"]["components"] if c["name"] not in names]
    lines += ["| variant | peak RSS | " + " | ".join(_short(n) for n in names) + " |", "|" + " --- |" * (2 + len(names))]
    lines += [_row(v["name"], v["memory"], names) for v in rows]
    lines.append("")
    settings = [v for v in rows if v.get("engine_settings")]
    if settings:
        lines.append("Context and KV cache per variant: " + "; ".join(
            f"{v['name']}: n_ctx {v['engine_settings'].get('n_ctx')}, K {v['engine_settings'].get('type_k', '-')}, "
            f"V {v['engine_settings'].get('type_v', '-')}" for v in settings if "n_ctx" in v["engine_settings"]))
        lines.append("")
    lines += ["How each component is measured (* marks the engine's own statements):", ""]
    methods: dict[str, list[str]] = {}  # method -> the components it measures, in order of first use
    for v in rows:
        for c in v["memory"]["components"]:
            names = methods.setdefault(c["method"], [])
            if _short(c["name"]) not in names:
                names.append(_short(c["name"]))
    lines += [f"- {', '.join(names)}: {method}" for method, names in methods.items()]
    lines.append("")
    return lines


def _short(name: str) -> str:
    return name.replace(" (engine statement)", "*")


def _row(name: str, m: dict[str, Any], names: list[str]) -> str:
    """One variant's cells; a component this variant's engine does not have is left blank."""
    have = {c["name"]: c["mib"] for c in m["components"]}
    return f"| {name} | {m['peak_mib']:.0f} | " + " | ".join(f"{have[n]:.0f}" if n in have else "" for n in names) + " |"
