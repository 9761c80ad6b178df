"""Loss-curve plot from ``metrics.jsonl`` (one panel per stage)."""

from __future__ import annotations

import json
from pathlib import Path

from allava.fileio import atomic_path


def plot_loss(metrics_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for line in Path(metrics_path).read_text().splitlines():
        try:  # a line torn by a full disk or a kill (the run resumed after it) is skipped, not fatal
            rows.append(json.loads(line))
        except ValueError:
            continue
    stages: dict[str, list[dict]] = {}
    for r in rows:
        stages.setdefault(r["stage"], []).append(r)
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(4.5 * max(1, len(stages)), 3.4), squeeze=False)
    for ax, (name, rs) in zip(axes[0], stages.items(), strict=False):
        ax.plot([r["step"] for r in rs], [r["loss"] for r in rs], lw=1)
        ax.set_title(f"stage {name}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
