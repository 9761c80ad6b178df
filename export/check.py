"""Parity of an export variant against its PyTorch checkpoint; table printed, JSON saved in the manifest.

Measures (per prompt, then summarised): free-running greedy agreement over the first N tokens,
teacher-forced top-1 agreement on PyTorch's tokens (steps with a PyTorch top-2 gap below
--tie-eps are skipped: near-ties are noise, not export error), first-token logit max/mean abs
difference, and projector-output (image embedding) differences.

Prompts: the built-in world's held-out file when present (--heldout, default
outputs/world/ALLaVA-Heldout-World.json), else synthetic shapes at the model's native image size.

A stock (unpatched) llama-cpp-python can be measured too (--stock-site, default
.cache/llama-cpp-stock when present; build it with scripts/build_llama_cpp.sh --stock --target DIR):
it runs in a subprocess with that build first on sys.path, and its error is reported, not failed on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from allava.formats import REFERENCE, get_format

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HELDOUT = ROOT / "outputs/world/ALLaVA-Heldout-World.json"
DEFAULT_STOCK = ROOT / ".cache/llama-cpp-stock"


def _prompts(checkpoint: Path, n: int, heldout: str | None, seed: int):
    from export.parity import heldout_prompts, synthetic_prompts

    if heldout and Path(heldout).is_file():
        return heldout_prompts(heldout, n), f"heldout:{heldout}"
    size = json.loads((checkpoint / "config.json").read_text())["vision_config"]["image_size"]
    return synthetic_prompts(n, size, seed), f"synthetic:{size}px:seed{seed}"


def measure(checkpoint: Path, variant: Path, n: int, n_tokens: int, tie_eps: float, heldout: str | None,
            seed: int, threads: int | None, progress: bool = True) -> dict[str, Any]:
    """Run the parity measurement in this process (with whatever llama_cpp it imports)."""
    from export.parity import run_parity
    from runtimes import load_runtime

    prompts, source = _prompts(checkpoint, n, heldout, seed)
    ref = load_runtime(checkpoint, threads, fmt=REFERENCE)
    cand = load_runtime(variant, threads)
    res = run_parity(ref, cand, prompts, n_tokens, tie_eps, progress)
    res["summary"]["prompts"] = source
    if cand.supports("build_info"):
        res["build"] = cand.build_info()
    cand.close()
    return res


def measure_stock(args: argparse.Namespace, site: Path) -> dict[str, Any]:
    """Same measurement in a subprocess that imports the stock llama_cpp from `site`."""
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "stock.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), str(args.checkpoint), str(args.variant),
               "-n", str(args.n), "--tokens", str(args.tokens), "--tie-eps", str(args.tie_eps),
               "--seed", str(args.seed), "--no-stock", "--no-save", "--json-out", str(out), "--quiet"]
        if getattr(args, "threads", None):
            cmd += ["--threads", str(args.threads)]
        if args.heldout:
            cmd += ["--heldout", str(args.heldout)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0 or not out.is_file():
            return {"error": f"stock run failed: {(p.stderr or p.stdout).strip()[-400:]}"}
        res = json.loads(out.read_text())
        if (res.get("build") or {}).get("patched"):
            return {"error": f"{site} holds a patched build, not stock"}
        return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python export/check.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="the Hugging Face folder the variant was exported from")
    ap.add_argument("variant", type=Path, help="export variant folder (with its manifest)")
    ap.add_argument("-n", type=int, default=50, help="number of prompts (default 50)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens compared per prompt (default 32)")
    ap.add_argument("--tie-eps", type=float, default=5e-3, help="skip teacher-forced steps whose PyTorch top-2 gap "
                    "is below this (default 5e-3)")
    ap.add_argument("--heldout", default=str(DEFAULT_HELDOUT) if DEFAULT_HELDOUT.is_file() else None,
                    help="ALLaVA held-out JSON (default: the built-in world's, when it exists)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic prompts")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both runtimes (default: all; use 1 on "
                    "a busy machine: llama.cpp's spinning thread pool stalls when cores are oversubscribed)")
    ap.add_argument("--stock-site", type=Path, default=DEFAULT_STOCK,
                    help="a `pip install --target` dir holding stock llama-cpp-python (measured when present)")
    ap.add_argument("--no-stock", action="store_true", help="do not measure a stock build")
    ap.add_argument("--no-save", action="store_true", help="do not write parity into the variant manifest")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the full result JSON here")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from runtimes import detect_format

    fmt = get_format(detect_format(a.variant))
    if fmt.not_runnable_reason():
        print(f"{a.variant}: {fmt.name} is {fmt.not_runnable_reason()}; no parity measured", file=sys.stderr)
        return 3
    res = measure(a.checkpoint, a.variant, a.n, a.tokens, a.tie_eps, a.heldout, a.seed, a.threads, not a.quiet)
    if a.json_out:
        a.json_out.write_text(json.dumps(res, indent=2))
    build = res.get("build") or {}
    label = "patched" if build.get("patched") else ("stock" if "patched" in build else fmt.name)
    table = {label: res}
    if not a.no_stock and "patched" in build and a.stock_site and (a.stock_site / "llama_cpp").is_dir():
        table["stock"] = measure_stock(a, a.stock_site)
    if not a.quiet:
        from export.parity import format_table

        print(f"parity of {a.variant} vs {a.checkpoint} ({res['summary']['prompts']})")
        print(format_table(table))
    if not a.no_save:
        from allava.variant import update_manifest

        parity = {"reference": str(a.checkpoint.resolve()), "summary": res["summary"],
                  "build": res.get("build"), "per_prompt": res["prompts"]}
        if "stock" in table:
            parity["stock"] = table["stock"].get("summary", {"error": table["stock"].get("error")})
        update_manifest(a.variant, parity=parity)
    return 0


if __name__ == "__main__":
    sys.exit(main())
