"""The importance-matrix grid of docs/imatrix.md: GGUF types x {no imatrix, text-only, multimodal} x seeds,
each scored on the held-out set (exact match, delta vs PyTorch, same-answer rate) and the parity prompts.

  python bench/experiments/imatrix_grid.py --checkpoint outputs/tiny --source outputs/exports/gguf/F32 \\
      --work /tmp/imatrix-grid --types q4_k_m,q4_0,q3_k_m,q2_k,iq4_xs,iq3_xxs --seeds 0,1 --accuracy 2441

Each calibration (none, text-s<seed>, multimodal-s<seed>) gets its own export folder under --work holding a
hard-linked copy of the source variant, so the variants are made by the project's own command
(quantize/run.py --format gguf --imatrix auto ...) and sit side by side. One export/check.py run scores them all
against one PyTorch reference run (its figures land in each variant's manifest); --steps table only reads the
manifests and prints the markdown table. Types that need an imatrix are skipped in the "none" column.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from allava.formats import get_format

REPO = Path(__file__).resolve().parents[2]


def configs(seeds: list[int]) -> list[tuple[str, list[str]]]:
    """(folder name, quantize/run.py imatrix options); the order is the table's column order."""
    out = [("none", [])]
    for s in seeds:
        out += [(f"multimodal-s{s}", ["--imatrix", "auto", "--seed", str(s)]),
                (f"text-s{s}", ["--imatrix", "auto", "--seed", str(s), "--text-only"])]
    return out


def variant_dirs(work: Path, types: list[str], seeds: list[int]) -> list[Path]:
    fmt = get_format("gguf")
    dirs = []
    for t in types:  # type-major: a grid stopped early still has whole rows
        for name, _ in configs(seeds):
            if name == "none" and fmt.precision(t).needs_imatrix:
                continue
            dirs.append(work / name / fmt.precision(t).name)
    return dirs


def build(a: argparse.Namespace, types: list[str], seeds: list[int]) -> None:
    fmt = get_format("gguf")
    for name, opts in configs(seeds):
        root = a.work / name
        if not (root / a.source.name).is_dir():
            root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(a.source, root / a.source.name, copy_function=_link)
        todo = [t for t in types if not (name == "none" and fmt.precision(t).needs_imatrix)]
        cmd = [sys.executable, "quantize/run.py", "--format", "gguf", "--types", ",".join(todo), "--export", str(root),
               "--n-samples", str(a.n_samples), *opts]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=REPO)


def _link(src: str, dst: str) -> None:
    import os

    os.link(src, dst)


def check(a: argparse.Namespace, types: list[str], seeds: list[int]) -> None:
    cmd = [sys.executable, "export/check.py", str(a.checkpoint), *map(str, variant_dirs(a.work, types, seeds)),
           "-n", str(a.n), "--accuracy", str(a.accuracy), "--no-thresholds", "--no-stock", "--quiet",
           "--threads", str(a.threads)]
    if a.heldout:
        cmd += ["--heldout", str(a.heldout)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def table(a: argparse.Namespace, types: list[str], seeds: list[int]) -> str:
    rows = ["| type | calibration | LM size | held-out EM | Δ vs PyTorch [95% CI] | same answer | greedy (parity) "
            "| first-token logit mean abs err |", "|---|---|---|---|---|---|---|---|"]
    for v in variant_dirs(a.work, types, seeds):
        mpath = v / "manifest.json"
        if not mpath.is_file():
            continue
        m = json.loads(mpath.read_text())
        s = (m.get("parity") or {}).get("summary") or {}
        if "heldout_exact_match" not in s:
            continue
        ci = s["heldout_delta_ci"]
        rows.append(f"| {m['precision']} | {v.parent.name} | {m['sizes']['model'] / 2**20:.2f} MiB | "
                    f"{s['heldout_exact_match']:.2f} | {s['heldout_delta']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] | "
                    f"{s['heldout_same_answers']:.1%} | {s['greedy_exact_or_tie_rate']:.0%} | "
                    f"{s['first_logits_mean_abs']:.4f} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("outputs/tiny"))
    ap.add_argument("--source", type=Path, default=Path("outputs/exports/gguf/F32"), help="the F32 (or F16) GGUF variant")
    ap.add_argument("--work", type=Path, default=Path("/tmp/imatrix-grid"))
    ap.add_argument("--types", default="q4_k_m,q4_0,q3_k_m,q2_k,iq4_xs,iq3_xxs")
    ap.add_argument("--seeds", default="0,1", help="calibration seeds (each one a text-only and a multimodal imatrix)")
    ap.add_argument("--n-samples", type=int, default=128)
    ap.add_argument("--accuracy", type=int, default=2441, help="held-out questions scored per variant")
    ap.add_argument("-n", type=int, default=20, help="parity prompts")
    ap.add_argument("--heldout", type=Path, default=Path("outputs/world/ALLaVA-Heldout-World.json"))
    ap.add_argument("--threads", type=int, default=1,
                    help="llama.cpp threads in the check (1: a shared 2-core host stalls llama.cpp's spinning pool)")
    ap.add_argument("--steps", default="build,check,table")
    a = ap.parse_args()
    types = [t.strip() for t in a.types.split(",") if t.strip()]
    seeds = [int(s) for s in a.seeds.split(",")]
    steps = a.steps.split(",")
    if "build" in steps:
        build(a, types, seeds)
    if "check" in steps:
        check(a, types, seeds)
    if "table" in steps:
        print(table(a, types, seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
