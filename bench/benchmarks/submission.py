"""Official submission files: every variant's predictions in the exact format each benchmark's own
tool or server takes, so any number the report prints can be checked with the official tool.

``write_submissions(results, out)`` takes the bench run's results dict (``results.json``: config,
benchmarks with data root and limit, variants with predictions and judged details), reloads each
benchmark's items exactly as the run did (same data root, limit and seed: the subsample is
deterministic) and writes ``out/<variant>/<benchmark>/...`` through each adapter's
``submission_files``; ``out/index.json`` lists what was written. The formats are listed in
``bench/README.md``. Run it on a finished run with::

    python -m bench.benchmarks.submission outputs/bench/mobile/results.json [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from allava.fileio import write_text_atomic
from bench.benchmarks import REPORT_BENCHMARKS, DataFormatError, get_adapter


def model_id(variant: str) -> str:
    """A variant name as a file-name-safe model id ("gguf:Q4_K_M" -> "gguf_Q4_K_M")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", variant).strip("_") or "model"


def write_submissions(results: Mapping[str, Any], out: Path) -> Path:
    """Write every scored variant's submission files under ``out``; returns ``out/index.json``."""
    out = Path(out)
    seed = (results.get("config") or {}).get("seed", 0)
    index: dict[str, Any] = {"variants": {}, "skipped": []}
    for bench in results.get("benchmarks", []):
        name = bench["name"]
        if name not in REPORT_BENCHMARKS:
            continue
        if not bench.get("data_root") or bench.get("status") != "ok":
            index["skipped"].append({"benchmark": name, "reason": bench.get("status") or "no data"})
            continue
        adapter = get_adapter(name)
        try:
            items = adapter.load(bench["data_root"], limit=bench.get("limit"), seed=seed)
        except (DataFormatError, FileNotFoundError) as exc:
            index["skipped"].append({"benchmark": name, "reason": f"cannot reload the items: {exc}"})
            continue
        for v in results.get("variants", []):
            if v.get("status") != "ok":
                continue
            preds = (v.get("predictions") or {}).get(name) or {}
            entry = (v.get("accuracy") or {}).get(name) or {}
            details = entry.get("details") if isinstance(entry.get("details"), Mapping) else None
            mid = model_id(v["name"])
            paths = adapter.submission_files(items, preds, out / mid / name, mid,
                                             judged=details if details and details.get("judgments") else None)
            index["variants"].setdefault(v["name"], {})[name] = [str(p.relative_to(out)) for p in paths]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.json"
    write_text_atomic(path, json.dumps(index, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="results.json of a bench run")
    ap.add_argument("--out", type=Path, help="default: <results folder>/submissions")
    a = ap.parse_args(argv)
    results = json.loads(a.results.read_text(encoding="utf-8"))
    print(write_submissions(results, a.out or a.results.parent / "submissions"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
