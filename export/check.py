"""Parity of export variants against their PyTorch checkpoint; a table per variant, JSON saved in each manifest.

  python export/check.py outputs/tiny outputs/exports/gguf/F16      # one variant
  python export/check.py outputs/tiny outputs/exports               # every variant below, one reference run

Measures (per prompt, then summarised): free-running greedy agreement over the first N tokens,
teacher-forced top-1 agreement on PyTorch's tokens (steps with a PyTorch top-2 gap below
--tie-eps are skipped: near-ties are noise, not export error), first-token logit max/mean abs
difference, and projector-output (image embedding) differences.

Any format in the table (allava/formats.py) that this host can run is measured through its runtime;
a format whose engine cannot run here but has a stand-in (CoreML off macOS: the reference MIL
evaluator executing the packages' own programs) is measured through the stand-in, and the summary
says so; one with neither is listed with the reason and the exit code is 3.

Prompts: the built-in world's held-out file when present (--heldout, default
outputs/world/ALLaVA-Heldout-World.json), else synthetic shapes at the model's native image size.

Thresholds: each variant is held to what the README promises for its format and precision (PROMISES
below: greedy agreement, teacher-forced top-1, held-out exact-match drop when --accuracy is given); a
variant below its promise is named on stderr with the figure and the threshold it missed, and the exit
code is 1. --min-greedy / --min-tf / --max-heldout-drop override the table for every variant;
--no-thresholds only reports. A format or precision without a promise is only reported.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from allava.formats import REFERENCE, get_format
from allava.variant import MANIFEST
from export.parity import TIE_EPS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HELDOUT = ROOT / "outputs/world/ALLaVA-Heldout-World.json"
DEFAULT_STOCK = ROOT / ".cache/llama-cpp-stock"


@dataclass(frozen=True)
class Promise:
    """What the README promises for one variant of the trained default; None: nothing promised.

    min_greedy: share of prompts whose free-running greedy tokens equal PyTorch's, a divergence that starts
    at a PyTorch near-tie (top-2 gap < --tie-eps) counting as equal (``greedy_exact_or_tie_rate``).
    min_tf: teacher-forced top-1 agreement on PyTorch's tokens, near-ties skipped (``tf_top1_agreement``).
    max_heldout_drop: points of held-out exact match below PyTorch on the same --accuracy questions.
    """

    min_greedy: float | None = None
    min_tf: float | None = None
    max_heldout_drop: float | None = None
    source: str = ""


_GGUF = "README: 100% identical greedy answers and teacher-forced top-1 on 20 held-out prompts"
_GGUF_Q = _GGUF + "; held-out drop within 3 points (tests: Q4_K_M <= 3)"
_CML = "README/experiments: CoreML {} held-out exact match {} (400 questions)"
# (format, precision) -> the promise. Held-out drops carry a margin for a model trained on another machine kind
# (its weights, hence its near-ties, differ): 1 point where the measured change is 0-0.5, 3 for 4-bit.
PROMISES: dict[tuple[str, str], Promise] = {
    **{("gguf", p): Promise(1.0, 1.0, 1.0, _GGUF + "; held-out +0.0 (tests: <= 1 point)") for p in ("F32", "F16", "Q8_0")},
    **{("gguf", p): Promise(1.0, 1.0, 3.0, _GGUF_Q) for p in ("Q5_K_M", "Q4_K_M")},
    # 20/20 on the AVX-512 kind's trained default; 19/20 on the AVX2-only kind's: ' right' -> ' left' where PyTorch's
    # top-2 gap is 0.037, inside Q4_0's first-token logit error (up to 0.6); held-out -1.0 (200 questions)
    ("gguf", "Q4_0"): Promise(0.95, 0.95, 3.0, _GGUF_Q + "; Q4_0 19/20 on the AVX2-only kind (a flip at a PyTorch gap of 0.037)"),
    ("gguf", "Q4_K_M-VQ8_0"): Promise(1.0, 1.0, 3.0, _GGUF + " with the Q8_0 projector too (docs/experiments.md §10)"),
    # 20/20 on the AVX-512 kind's trained default, 18/20 on the AVX2-only kind's (two flips at PyTorch gaps 0.34, 0.56)
    ("gguf", "Q3_K_M"): Promise(0.85, None, 3.0, "docs/imatrix.md: Q3_K_M with a multimodal imatrix 20/20 greedy (AVX-512 "
                                "kind), 18/20 (AVX2-only kind); held-out -0.16/-0.04 (2,441 questions; without an imatrix -0.61)"),
    ("onnx", "FP32"): Promise(1.0, 1.0, 1.0, "README: fp32 gives PyTorch's greedy tokens on 50/50 held-out prompts"),
    ("onnx", "FP16"): Promise(None, None, 1.0, "README: held-out exact match vs PyTorch fp16 +0.0 (200 questions)"),
    ("onnx", "INT8"): Promise(None, None, 1.0, "README: held-out exact match vs PyTorch int8 +0.5 (200 questions)"),
    ("onnx", "Q4"): Promise(None, None, 3.0, "README: held-out exact match vs PyTorch q4 +0.0 (200 questions)"),
    ("onnx", "Q4F16"): Promise(None, None, 3.0, "experiments: held-out exact match vs PyTorch q4f16 -0.5"),
    # 50/50 on the AVX-512 kind's trained default; 19/20 on the AVX2-only kind's (one flip at a PyTorch gap of 0.037)
    ("gptq", "W4G128"): Promise(0.95, None, 1.0, "README: GPTQ W4G128 gives PyTorch's greedy tokens on 50/50 held-out "
                                "prompts (AVX-512 kind), 19/20 (AVX2-only kind); held-out exact match -0.25 (400 questions)"),
    ("coreml", "FP16"): Promise(1.0, None, 1.0, "README: CoreML FP16 PyTorch's greedy tokens on 50/50; held-out +0.0"),
    # 48/50: the two others diverge at PyTorch gaps of 0.008 and 0.005, under fp16's logit spacing (near-ties at
    # the default --tie-eps 1e-2, which counts them as equal)
    ("coreml", "INT8"): Promise(0.9, None, 1.0, "README: CoreML INT8 48/50 (the two others PyTorch near-ties); -0.5"),
    ("coreml", "INT4"): Promise(None, None, 3.0, _CML.format("INT4", "-0.75")),
    ("coreml", "PALETTE4"): Promise(None, None, 4.0, _CML.format("PALETTE4", "-2.0")),
}


def promise_for(fmt: str, precision: str, overrides: Promise | None = None) -> Promise:
    """The promise for a variant: the table's, with each non-None field of ``overrides`` put over it."""
    base = PROMISES.get((fmt, precision.upper()), Promise(source="no promise in the README"))
    given = {k: v for k, v in vars(overrides).items() if k != "source" and v is not None} if overrides else {}
    if not given:
        return base
    return replace(base, **given, source=f"{base.source}; overridden on the command line: {given}")


def threshold_failures(summary: dict[str, Any], promise: Promise) -> list[str]:
    """Each threshold ``summary`` (a parity summary) misses, as 'metric figure < threshold'; empty: it passes.

    A held-out drop is only checked where the summary has one (check.py ran with --accuracy)."""
    out = []
    if promise.min_greedy is not None and summary["greedy_exact_or_tie_rate"] < promise.min_greedy:
        out.append(f"greedy_exact_or_tie_rate {summary['greedy_exact_or_tie_rate']:.3f} < --min-greedy "
                   f"{promise.min_greedy:.3f}")
    if promise.min_tf is not None and summary["tf_top1_agreement"] < promise.min_tf:
        out.append(f"tf_top1_agreement {summary['tf_top1_agreement']:.4f} < --min-tf {promise.min_tf:.4f}")
    delta = summary.get("heldout_delta")
    if promise.max_heldout_drop is not None and delta is not None and -delta > promise.max_heldout_drop:
        out.append(f"heldout_delta {delta:+.2f} points < -(--max-heldout-drop {promise.max_heldout_drop:.2f})")
    return out


def _prompts(checkpoint: Path, n: int, heldout: str | None, seed: int):
    from export.parity import heldout_prompts, synthetic_prompts

    if heldout and Path(heldout).is_file():
        return heldout_prompts(heldout, n), f"heldout:{heldout}"
    size = json.loads((checkpoint / "config.json").read_text())["vision_config"]["image_size"]
    return synthetic_prompts(n, size, seed), f"synthetic:{size}px:seed{seed}"


class ReferenceRun:
    """The PyTorch results for the prompts, computed once and compared against every variant."""

    def __init__(self, checkpoint: Path, n: int, n_tokens: int, heldout: str | None, seed: int,
                 threads: int | None, progress: bool, accuracy_items: int = 0) -> None:
        from export.parity import heldout_accuracy, reference_results
        from runtimes import load_runtime

        self.prompts, self.source = _prompts(checkpoint, n, heldout, seed)
        self.runtime = ref = load_runtime(checkpoint, threads, fmt=REFERENCE)
        self.results = reference_results(ref, self.prompts, n_tokens, progress)
        self.n_tokens = n_tokens
        self.items, self.accuracy = [], None
        if accuracy_items and heldout and Path(heldout).is_file():
            from allava.evaluate import load_heldout

            self.items = load_heldout(heldout, limit=accuracy_items)
            scored = heldout_accuracy(ref, self.items, progress=progress)
            self.accuracy, self.predictions = scored["exact_match"], scored["predictions"]


def measure(ref: ReferenceRun, variant: Path, tie_eps: float, threads: int | None, progress: bool = True,
            settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the parity measurement of one variant in this process (with whatever engine builds it imports);
    ``settings``: the engine's load settings (e.g. {"type_k": "q8_0"}), for measuring a runtime cut."""
    from export.parity import heldout_accuracy, run_parity, same_answer_rate
    from runtimes import detect_format, load_runtime

    fmt = get_format(detect_format(variant))
    stand_in = fmt.stand_in_class()  # the engine cannot run here: its stand-in runs the variant's own programs
    cand = stand_in().load(variant, threads) if stand_in else load_runtime(variant, threads, settings=settings)
    res = run_parity(None, cand, ref.prompts, ref.n_tokens, tie_eps, progress, refs=ref.results)
    res["summary"]["prompts"] = ref.source
    if ref.accuracy is not None:  # what a lower precision costs in answers, on the same questions
        scored = heldout_accuracy(cand, ref.items, progress=progress)
        got = scored["exact_match"]
        res["summary"].update(heldout_n=len(ref.items), heldout_exact_match=got, heldout_reference=ref.accuracy,
                              heldout_delta=got - ref.accuracy,
                              heldout_same_answers=same_answer_rate(ref.predictions, scored["predictions"]),
                              **heldout_interval(ref.items, ref.predictions, scored["predictions"]))
    if cand.supports("build_info"):
        res["build"] = cand.build_info()
    if stand_in:
        res["summary"]["executed_by"] = f"{fmt.stand_in} ({fmt.not_runnable_reason()})"
    cand.close()
    return res


def heldout_interval(items: list[Any], ref_preds: dict[str, str], preds: dict[str, str]) -> dict[str, Any]:
    """The held-out delta's paired 95% interval (bootstrap over the questions, seed 0; the bench's
    method, bench/harness/confidence.py) and how many answers equal PyTorch's: +0.5 on 200 questions
    is one question, which the interval shows to be noise."""
    from allava.evaluate import normalize_answer
    from bench.harness.confidence import paired_mean_interval

    def hits(p: dict[str, str]) -> list[float]:
        return [float(normalize_answer(p.get(it.id, "")) == normalize_answer(it.answer)) for it in items]

    ci = paired_mean_interval(hits(preds), hits(ref_preds), seed=0)
    same = sum(normalize_answer(preds.get(it.id, "")) == normalize_answer(ref_preds.get(it.id, "")) for it in items)
    return {"heldout_delta_ci": [ci["lo"], ci["hi"]], "heldout_delta_significant": ci["excludes_zero"],
            "heldout_delta_ci_method": f"{ci['method']}, 95%, {ci['resamples']} resamples, seed 0",
            "heldout_same_count": same}


def measure_user_path(ref: ReferenceRun, variant: Path, heldout: str | None, n: int, threads: int | None,
                      progress: bool) -> dict[str, Any]:
    """The GGUF pair as llama.cpp users run it (export/user_path.py): MTMDChatHandler and llama-mtmd-cli."""
    from export.user_path import measure_user_paths

    if not (heldout and Path(heldout).is_file()):
        return {"error": "the user-path check needs the held-out set (--heldout)"}
    return measure_user_paths(ref.runtime, variant, heldout, n, threads=threads, progress=progress)


def measure_stock(args: argparse.Namespace, variant: Path, site: Path) -> dict[str, Any]:
    """Same measurement in a subprocess that imports the stock llama_cpp from `site`."""
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "stock.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), str(args.checkpoint), str(variant),
               "-n", str(args.n), "--tokens", str(args.tokens), "--tie-eps", str(args.tie_eps),
               "--seed", str(args.seed), "--no-stock", "--no-save", "--no-thresholds", "--json-out", str(out),
               "--quiet"]
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
    ap.add_argument("variants", type=Path, nargs="+", help="export variant folders (with a manifest), or export "
                    "folders: every variant below them is checked against the same reference run")
    ap.add_argument("-n", type=int, default=50, help="number of prompts (default 50)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens compared per prompt (default 32)")
    ap.add_argument("--tie-eps", type=float, default=TIE_EPS, help="skip teacher-forced steps whose PyTorch top-2 gap "
                    f"is below this (default {TIE_EPS:g}: a near-tie, export/parity.py says why)")
    ap.add_argument("--heldout", default=str(DEFAULT_HELDOUT) if DEFAULT_HELDOUT.is_file() else None,
                    help="ALLaVA held-out JSON (default: the built-in world's, when it exists)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic prompts")
    ap.add_argument("--accuracy", type=int, default=0, metavar="N", help="also score N held-out questions "
                    "(exact match) with each variant and PyTorch: the accuracy delta with its paired 95%% bootstrap interval and "
                    "the count of answers equal to PyTorch's (default 0: off)")
    ap.add_argument("--user-path", type=int, default=0, metavar="N", help="GGUF variants: also run N held-out "
                    "questions through llama-cpp-python's MTMDChatHandler and llama-mtmd-cli (when built: "
                    "scripts/build_llama_cpp.sh) at the native size, 128x128 and 160x96, against PyTorch (default 0: off)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both runtimes (default: all; use 1 on "
                    "a busy machine: llama.cpp's spinning thread pool stalls when cores are oversubscribed)")
    ap.add_argument("--stock-site", type=Path, default=DEFAULT_STOCK,
                    help="a `pip install --target` dir holding stock llama-cpp-python (measured when present)")
    ap.add_argument("--no-stock", action="store_true", help="do not measure a stock build")
    ap.add_argument("--no-save", action="store_true", help="do not write parity into the variant manifest")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the full result JSON here")
    ap.add_argument("--min-greedy", type=float, default=None, metavar="RATE", help="fail (exit 1) a variant whose "
                    "greedy_exact_or_tie_rate is below RATE (default: the README's promise for its format/precision)")
    ap.add_argument("--min-tf", type=float, default=None, metavar="RATE", help="fail a variant whose teacher-forced "
                    "top-1 agreement is below RATE (default: the README's promise)")
    ap.add_argument("--max-heldout-drop", type=float, default=None, metavar="POINTS", help="with --accuracy: fail a "
                    "variant whose held-out exact match is more than POINTS below PyTorch's (default: the README's "
                    "promise)")
    ap.add_argument("--no-thresholds", action="store_true", help="report only: never fail on the figures")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    overrides = Promise(a.min_greedy, a.min_tf, a.max_heldout_drop)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from allava.variant import ManifestError, find_manifests, update_manifest
    from export.parity import format_table
    from runtimes import detect_format
    from runtimes.base import VariantError

    variants = [v for p in a.variants for v in ([p] if (p / MANIFEST).is_file() else find_manifests(p))]
    if not variants:
        print(f"error: no export variant (a folder with a {MANIFEST}) in {', '.join(map(str, a.variants))}", file=sys.stderr)
        return 2
    from allava.checkpoint import CheckpointError, open_checkpoint

    try:  # a checkpoint cut short: one line, exit 2, before any variant is loaded
        open_checkpoint(a.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ref: ReferenceRun | None = None
    not_run, failed = [], []
    for variant in variants:
        try:  # a manifest cut short or naming an unknown format: one line, exit 2
            fmt = get_format(detect_format(variant))
        except (VariantError, ManifestError, FileNotFoundError, KeyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if fmt.not_runnable_reason() and not fmt.stand_in_available():
            not_run.append(f"{variant}: {fmt.name} is {fmt.not_runnable_reason()}; no parity measured")
            continue
        try:
            ref = ref or ReferenceRun(a.checkpoint, a.n, a.tokens, a.heldout, a.seed, a.threads, not a.quiet,
                                      a.accuracy)
            res = measure(ref, variant, a.tie_eps, a.threads, not a.quiet)
        except (VariantError, ManifestError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if a.json_out:
            a.json_out.write_text(json.dumps(res, indent=2))
        build = res.get("build") or {}
        label = "patched" if build.get("patched") else ("stock" if "patched" in build else fmt.name)
        table = {label: res}
        if not a.no_stock and "patched" in build and a.stock_site and (a.stock_site / "llama_cpp").is_dir():
            table["stock"] = measure_stock(a, variant, a.stock_site)
        user = None
        if a.user_path and fmt.name == "gguf":
            from export.user_path import format_user_path, summarize

            user = measure_user_path(ref, variant, a.heldout, a.user_path, a.threads, not a.quiet)
            if "error" not in user:
                res["summary"]["user_path"] = summarize(user)
        if not a.quiet:
            print(f"parity of {variant} vs {a.checkpoint} ({res['summary']['prompts']})")
            print(format_table(table))
            if user is not None:
                print(user["error"] if "error" in user else format_user_path(user))
        if not a.no_save:
            parity = {"reference": str(a.checkpoint.resolve()), "summary": res["summary"],
                      "build": res.get("build"), "per_prompt": res["prompts"]}
            if "stock" in table:
                parity["stock"] = table["stock"].get("summary", {"error": table["stock"].get("error")})
            if user is not None:
                parity["user_path"] = user
            update_manifest(variant, parity=parity)
        if not a.no_thresholds:
            promise = promise_for(fmt.name, _precision(variant), overrides)
            failed += [f"FAIL {variant} ({fmt.name}): {why} [{promise.source}]"
                       for why in threshold_failures(res["summary"], promise)]
    for line in not_run:
        print(line, file=sys.stderr)
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else (3 if not_run else 0)


def _precision(variant: Path) -> str:
    """The variant's precision as its manifest states it."""
    from allava.variant import read_manifest

    return str(read_manifest(variant).get("precision", ""))


if __name__ == "__main__":
    from allava.cli import guard  # a full disk (parity into the manifest, --json-out): one line, exit 4

    sys.exit(guard(main))
