"""Benchmark every variant of a model on a device profile: latency, memory, size and accuracy vs full precision.

  python bench/run.py --device mobile                      # after python train/run.py
  python bench/run.py --device laptop --benchmarks all --judge-model gpt-4o-mini --judge-base-url URL
  python bench/run.py --model allava-3b --random-init --benchmarks none   # full-size latency only

What it does, in order:
  1. reads the device profile (bench/profiles/<device>.json, or a JSON file you name: threads capped at
     this host's cores, CPU affinity, memory budget, allowed variants, bandwidth source);
  2. builds every variant the profile allows that --exports lacks, with the export and quantize
     commands the format table (allava/formats.py) names, skipping those its bits per weight put over
     the memory budget; then finds variants in --exports (every folder with a variant manifest); the
     PyTorch FP32 checkpoint is always the reference;
  3. runs each variant in a fresh process: warm-up, N timed generations (load, image encode, TTFT,
     prefill and decode tok/s, peak RSS), then the benchmark items not already in the prediction cache;
     a format this host cannot run (e.g. CoreML off macOS) is listed with its size and export parity;
  4. scores every benchmark with its official rule, deltas vs the reference and answer agreement;
     measures host memory bandwidth for the roofline; compares the harness's decode speed with the
     engine's own perf counters where the runtime has them (llama.cpp: the overhead ratio);
  5. recommends the variant to ship (bench/harness/recommend.py): the most accurate one whose measured
     peak RSS fits the memory budget and whose TTFT/decode meet the profile's "targets"; the Pareto front
     (accuracy, TTFT, memory); when nothing fits, which constraint failed and by how much (exit code
     still 0: "nothing fits" is an answer, not an error). On by default: it costs nothing after the run
     and a device profile's user is asking what to ship; --no-recommend leaves it out;
  6. writes results.json, results.csv, report.md and plot.png to --output-dir.

Default benchmark: "world", the built-in world's held-out questions (outputs/world, written by
train/run.py), stratified by question type to 400 items: enough that a 1-point loss is told from noise
(every delta carries a paired 95% bootstrap interval, bench/README.md), small enough for the mobile
run's ~10 minutes on 2 cores. Exit codes: 0 ok, 2 bad input (unknown device/benchmark), 3 --max-drop
exceeded (a loss beyond it whose interval lies below zero), 4 no space left on device
(allava/cli.py).
"""

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench.harness.profiles import known_devices

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="mobile", help=f"device profile: {', '.join(known_devices())} (default mobile), "
                    "or the path of a profile JSON file")
    ap.add_argument("--model", default="tiny", help="model preset, picks default paths (tiny: outputs/tiny + outputs/exports)")
    ap.add_argument("--checkpoint", type=Path, help="HF model folder, the FP32 reference (default outputs/<model>)")
    ap.add_argument("--exports", type=Path, help="export folder holding variant folders (default outputs/exports); "
                    "missing variants are built into <exports>/<format>/")
    ap.add_argument("--random-init", action="store_true", help="use (and build if needed) a random-weight checkpoint of "
                    "--model: latency/size work without training (allava-3b: outputs/bench-allava3b)")
    ap.add_argument("--variants", help="comma list to keep: variants, precisions or formats, e.g. Q4_0,gguf:Q8_0,coreml "
                    "(the reference always runs)")
    ap.add_argument("--no-build", action="store_true", help="do not build missing exports; report what exists")
    ap.add_argument("--benchmarks", default="world", help="comma list of benchmark names, 'all' (world + the 12 report "
                    "benchmarks), 'report' (the 12) or 'none' (latency only). Default: world")
    ap.add_argument("--limit", type=int, help="items per benchmark (stratified, seeded); default world 400, report "
                    "benchmarks 8; 0 = all")
    ap.add_argument("--repeats", type=int, default=3, help="timed generations per variant (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up generations per variant (default 1)")
    ap.add_argument("--latency-tokens", type=int, default=32, help="new tokens per timed generation (default 32)")
    ap.add_argument("--output-dir", type=Path, help="default outputs/bench/<device>[-<model>]")
    ap.add_argument("--max-drop", type=float, help="exit 3 when a variant loses more than this many points on a "
                    "scored benchmark vs the reference and the loss is not noise (the delta's paired 95%% interval "
                    "lies below zero; a delta without an interval counts on its point estimate)")
    ap.add_argument("--judge-model", help="judge for judged benchmarks (OpenAI-compatible; key from ALLAVA_JUDGE_API_KEY "
                    "or OPENAI_API_KEY). Without it they are reported as 'no judge'")
    ap.add_argument("--judge-base-url", help="base URL of the judge's OpenAI-compatible API")
    ap.add_argument("--data-root", type=Path, default=Path("outputs/world"), help="built-in world (held-out set)")
    ap.add_argument("--bench-data", type=Path, help="official benchmark files, one sub-folder per benchmark name")
    ap.add_argument("--cache-dir", type=Path, default=Path("outputs/bench/cache"), help="prediction cache (SQLite)")
    ap.add_argument("--seed", type=int, default=0, help="subsampling seed")
    ap.add_argument("--engine", action="append", default=[], metavar="FORMAT.KEY=VALUE",
                    help="an engine setting for this run over the profile's 'engine' object, repeatable, e.g. "
                    "gguf.n_ubatch=512 gguf.flash_attn=off (llama.cpp's: runtimes/llamacpp_settings.py); "
                    "results.json records the values each variant ran with")
    ap.add_argument("--recommend", action=argparse.BooleanOptionalAction, default=True,
                    help="pick the variant to ship: most accurate within the profile's memory budget and latency "
                    "targets, with the Pareto front; results.json 'recommendation' (null when nothing fits, with "
                    "'constraints_failed'). Default on")
    ap.add_argument("--accuracy-from", type=Path, metavar="RESULTS", help="a results.json (or its folder) of a run "
                    "that measured accuracy, e.g. the trained tiny default's: its per-precision scores stand in for "
                    "a run without accuracy (random weights, --benchmarks none). Without it such a run ranks by "
                    "bits per weight")
    return ap.parse_args(argv)


def load_accuracy_from(path: Path) -> dict:
    """The other run's results (variants, benchmarks, config) for the accuracy stand-in; ValueError when unusable."""
    import json

    f = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
        data["variants"], data["benchmarks"]  # noqa: B018 - the two keys the stand-in reads
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--accuracy-from {f}: expected a bench results.json with variants and benchmarks ({exc})") from exc
    data["source"] = str(f)
    return data


def parse_engine(pairs: list[str]) -> dict[str, dict[str, object]]:
    """``["gguf.n_ubatch=512"]`` -> ``{"gguf": {"n_ubatch": 512}}`` (values as JSON where they parse:
    numbers, true/false, null; otherwise strings). A malformed pair raises ValueError naming it."""
    import json

    out: dict[str, dict[str, object]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        fmt, dot, name = key.partition(".")
        if not (sep and dot and fmt and name):
            raise ValueError(f"--engine {pair!r}: expected FORMAT.KEY=VALUE, e.g. gguf.n_ubatch=512")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(fmt, {})[name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.benchmarks.registry import UnknownBenchmarkError
    from bench.harness import accuracy, plot, report
    from bench.harness.profiles import ProfileError, load_profile
    from bench.harness.runner import BenchConfig, execute

    a = parse_args(argv)
    try:
        engine = parse_engine(a.engine)
        acc_from = load_accuracy_from(a.accuracy_from) if a.accuracy_from else None
        load_profile(a.device)  # a malformed profile: one line, exit 2, before any work
    except (ValueError, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = BenchConfig(engine=engine, device=a.device, model=a.model, checkpoint=a.checkpoint, exports=a.exports,
                      random_init=a.random_init, variants=[v.strip() for v in a.variants.split(",")] if a.variants else None,
                      benchmarks=a.benchmarks, limit=a.limit, repeats=a.repeats, warmup=a.warmup,
                      latency_tokens=a.latency_tokens, output_dir=a.output_dir, max_drop=a.max_drop,
                      judge_model=a.judge_model, judge_base_url=a.judge_base_url, world_root=a.data_root,
                      bench_data=a.bench_data, cache_dir=a.cache_dir, build_exports=not a.no_build, seed=a.seed)
    try:
        results = execute(cfg)
    except (ProfileError, UnknownBenchmarkError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = cfg.output_dir
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    worst = accuracy.worst_drop(results["variants"])
    verdicts = accuracy.drop_verdicts(results["variants"], a.max_drop) if a.max_drop is not None else []
    results["max_drop"] = {"limit": a.max_drop, "worst": worst[0] if worst else None, "where": worst[1] if worst else None,
                           "rule": accuracy.MAX_DROP_RULE, "verdicts": verdicts}
    if a.recommend:
        from bench.harness.recommend import recommend

        dev = results["device"]
        results["recommendation_analysis"] = recommend(results["variants"], results["benchmarks"],
                                                       dev["memory_budget_gib"], dev.get("targets"),
                                                       results["reference"], acc_from, results["skipped"])
        results["recommendation"] = results["recommendation_analysis"]["recommendation"]
    paths = [report.write_json(results, out), report.write_csv(results, out), report.write_markdown(results, out),
             plot.write_plot(results, out)]
    from bench.benchmarks.submission import write_submissions  # the official tools' input files, per variant

    paths.append(write_submissions(results, out / "submissions"))
    print(report.markdown(results))
    print("wrote " + ", ".join(str(p) for p in paths))
    rec = results.get("recommendation_analysis")
    if rec is not None:
        from bench.harness.recommend import paragraph

        print(paragraph(rec, results["device"]["name"], results["device"]["host_threads"]))
    for d in verdicts:
        print(f"{'error' if d['fails'] else 'note'}: {d['variant']} on {d['benchmark']} drops {d['drop']:.2f} points "
              f"(> --max-drop {a.max_drop}); {d['why']}", file=sys.stderr)
    return 3 if any(d["fails"] for d in verdicts) else 0


if __name__ == "__main__":
    from allava.cli import guard  # a full disk: one line, exit 4

    sys.exit(guard(main))
