"""What each device profile would ship, from one saved bench results.json (no new measurement).

Why: on this host every profile's threads are capped at the same cores, so one run's measured peak RSS,
TTFT and decode rate can be held against each profile's memory budget and latency targets
(bench/harness/recommend.py, the rule `bench/run.py --recommend` applies after a run). Used in
docs/recommend.md to give the laptop and desktop answers from the same full-size figures.

  python bench/experiments/recommend_profiles.py outputs/bench/mobile-allava3b-recommend \
      --devices mobile,laptop,desktop --accuracy-from outputs/bench/mobile-tiny-recommend
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.harness.profiles import load_profile
from bench.harness.recommend import markdown_lines, recommend
from bench.run import load_accuracy_from


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="a bench results.json or its folder")
    ap.add_argument("--devices", default="mobile,laptop,desktop", help="comma list of profiles (names or files)")
    ap.add_argument("--accuracy-from", type=Path, help="results of a run that measured accuracy (stand-in scores)")
    a = ap.parse_args()
    res = load_accuracy_from(a.results)  # the same reader: a results.json with variants and benchmarks
    other = load_accuracy_from(a.accuracy_from) if a.accuracy_from else None
    print(f"figures from {res['source']} (measured on {res['host']['cpu']}, {res['device']['host_threads']} threads, "
          f"load average {res['host']['load_avg']})\n")
    for name in a.devices.split(","):
        p = load_profile(name.strip())
        rec = recommend(res["variants"], res["benchmarks"], p.memory_budget_gib, p.targets, res["reference"], other,
                        res.get("skipped"))
        print("\n".join(markdown_lines(rec, p.name, res["device"]["host_threads"])))
        print("recommendation:", json.dumps(rec["recommendation"]), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
