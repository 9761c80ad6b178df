"""plot.png: accuracy vs decode speed, marker area proportional to size (the Pareto picture).

Why this picture: the deployer wants the upper-right corner (fast and accurate) at the smallest
marker; the Pareto front is drawn so dominated variants stand out. Without accuracy (``--benchmarks
none``) the y axis becomes size itself, which still shows the speed/size trade. With a recommendation
(``--recommend``) a second panel shows what the device's limits cut: TTFT against peak RSS with the
memory budget and the TTFT target as lines, the accuracy/TTFT/memory Pareto front ringed and the
recommended variant starred.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from allava.fileio import atomic_path
from bench.harness import recommend


def primary_benchmark(results: dict[str, Any]) -> str | None:
    """The first benchmark with a numeric score for the reference (or any variant)."""
    return recommend.primary_benchmark(results["variants"], results["benchmarks"])


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (higher x and higher y are better)."""
    keep = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2, y2) != (x, y) for x2, y2 in points):
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def write_plot(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bench = primary_benchmark(results)
    rows = []
    for v in results["variants"]:
        dec = (v.get("latency") or {}).get("decode_tok_s", {}).get("median")
        if v["status"] != "ok" or not dec:
            continue
        size = (v.get("size_bytes") or 0) / 2**20
        y = ((v.get("accuracy") or {}).get(bench) or {}).get("headline") if bench else size
        if y is not None:
            rows.append((v["name"], dec, y, size))
    rec = results.get("recommendation_analysis")
    fig, axes = plt.subplots(1, 2 if rec else 1, figsize=(13 if rec else 7, 5), dpi=120, squeeze=False)
    ax = axes[0][0]
    if rows:
        smax = max(r[3] for r in rows) or 1.0
        for name, x, y, size in rows:
            ax.scatter([x], [y], s=40 + 1500 * size / smax, alpha=0.5)
            ax.annotate(f"{name}\n{size:.1f} MiB", (x, y), fontsize=8, ha="center", va="bottom")
        front = pareto([(r[1], r[2]) for r in rows]) if bench else []
        if len(front) > 1:
            ax.plot([rows[i][1] for i in front], [rows[i][2] for i in front], "k--", lw=0.8, label="Pareto front")
            ax.legend(loc="lower left", fontsize=8)
        target = ((rec or {}).get("targets") or {}).get("decode_tok_s")
        if target:
            ax.axvline(target, color="tab:red", ls=":", lw=1, label=f"decode target {target:g} tok/s")
            ax.legend(loc="lower left", fontsize=8)
        xs = [r[1] for r in rows]
        if min(xs) > 0 and max(xs) / min(xs) > 20:  # PyTorch vs llama.cpp rates differ by orders of magnitude
            ax.set_xscale("log")
        ax.margins(x=0.15, y=0.2)  # room for the markers and their labels at the edges
    else:
        ax.text(0.5, 0.5, "no variant produced timings", ha="center", transform=ax.transAxes)
    ax.set_xlabel("decode tokens/s (median)")
    ax.set_ylabel(f"{bench} score" if bench else "size MiB (no accuracy run)")
    what = "accuracy" if bench else "size"
    ax.set_title(f"{results['device']['name']}: {what} vs speed, marker area ~ size")
    ax.grid(alpha=0.3)
    if rec:
        _limits_panel(axes[0][1], rec)
    fig.tight_layout()
    path = out / "plot.png"
    with atomic_path(path) as tmp:  # a full disk leaves the old plot whole
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _limits_panel(ax: Any, rec: dict[str, Any]) -> None:
    """TTFT vs peak RSS of every candidate, the budget lines, the Pareto front ringed, the pick starred."""
    rows = [r for r in rec["candidates"] if r["peak_rss_mib"] is not None and r["ttft_s"] is not None]
    pick = (rec.get("recommendation") or {}).get("variant")
    for r in rows:
        on_front = r["variant"] in rec["pareto_front"]
        ax.scatter([r["peak_rss_mib"]], [r["ttft_s"]], s=200 if r["variant"] == pick else 60,
                   marker="*" if r["variant"] == pick else "o", alpha=0.8,
                   edgecolors="k" if on_front else "none", linewidths=1.5, color="tab:green" if r["fits"] else "tab:gray")
        ax.annotate(r["variant"], (r["peak_rss_mib"], r["ttft_s"]), fontsize=8, ha="center", va="bottom")
    ax.axvline(rec["memory_budget_gib"] * 1024, color="tab:red", ls="--", lw=1,
               label=f"memory budget {rec['memory_budget_gib']:g} GiB")
    if rec["targets"].get("ttft_s"):
        ax.axhline(rec["targets"]["ttft_s"], color="tab:orange", ls="--", lw=1, label=f"TTFT target {rec['targets']['ttft_s']:g} s")
    ax.scatter([], [], marker="o", edgecolors="k", color="none", label="Pareto front (accuracy, TTFT, memory)")
    ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("peak RSS MiB (measured)")
    ax.set_ylabel("TTFT s (median)")
    ax.set_title("limits: green fits, " + (f"star = {pick}" if pick else "nothing fits"))
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.2)
