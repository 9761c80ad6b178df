"""The bench run: profile x variants x benchmarks -> one results dict (written by report.py / plot.py).

Why this order: everything that can fail cheaply (device name, benchmark names) fails before any
export or model load; exports are built before variants are listed; each variant then runs in its
own process (worker.py) with only its uncached prompts, so a re-run only computes what changed and
a variant that fails is recorded with its reason while the others go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from allava.formats import Format, Precision, get_format
from bench.harness import accuracy, latency, memory, roofline
from bench.harness.cache import PredictionCache, prediction_key
from bench.harness.hostinfo import host_facts
from bench.harness.profiles import DeviceProfile, load_profile
from bench.harness.suites import Suite, load_suites, parse_benchmarks
from bench.harness.variants import (
    REPO,
    Variant,
    checkpoint_params,
    discover,
    ensure_variants,
    fits_budget,
    pytorch_variant,
    select,
    wanted_precisions,
)

LATENCY_PROMPT = "Describe the image in detail."


@dataclass
class BenchConfig:
    device: str = "mobile"
    model: str = "tiny"
    checkpoint: Path | None = None
    exports: Path | None = None
    random_init: bool = False
    variants: list[str] | None = None
    benchmarks: str = "world"
    limit: int | None = None
    repeats: int = 3
    warmup: int = 1
    latency_tokens: int = 32
    output_dir: Path | None = None
    max_drop: float | None = None
    judge_model: str | None = None
    judge_base_url: str | None = None
    engine: dict[str, dict[str, Any]] = field(default_factory=dict)  # --engine overrides of the profile's settings
    world_root: Path = Path("outputs/world")
    bench_data: Path | None = None
    cache_dir: Path = Path("outputs/bench/cache")
    build_exports: bool = True
    seed: int = 0
    worker_timeout_s: float = 3600.0
    log: list[str] = field(default_factory=list)


def default_paths(cfg: BenchConfig, device: str) -> None:
    """Fill checkpoint / exports / output dir from the model preset and device name (see run.py --help)."""
    if cfg.random_init:
        work = Path("outputs/bench-allava3b") if cfg.model == "allava-3b" else Path(f"outputs/random-{cfg.model}")
        cfg.checkpoint = cfg.checkpoint or work / "hf"
        cfg.exports = cfg.exports or work
    else:
        cfg.checkpoint = cfg.checkpoint or Path("outputs") / cfg.model
        cfg.exports = cfg.exports or (Path("outputs/exports") if cfg.model == "tiny" else Path(f"outputs/exports-{cfg.model}"))
    cfg.checkpoint, cfg.exports = cfg.checkpoint.resolve(), cfg.exports.resolve()
    cfg.world_root = cfg.world_root.resolve()
    cfg.bench_data = cfg.bench_data.resolve() if cfg.bench_data else None
    suffix = "" if cfg.model == "tiny" and not cfg.random_init else f"-{cfg.model}{'-random' if cfg.random_init else ''}"
    cfg.output_dir = cfg.output_dir or Path("outputs/bench") / f"{device}{suffix}"


def build_random_checkpoint(model: str, out: Path) -> None:
    """A seeded random-weight checkpoint of the preset, written by the train stage's program
    (bf16 at full size: 12 GB of fp32 would not fit next to the export on a 24 GB machine)."""
    if (out / "config.json").is_file():
        return
    dtype = "bf16" if model == "allava-3b" else "fp32"
    subprocess.run([sys.executable, "-m", "train.init_checkpoint", "--preset", model, "--output-dir", str(out),
                    "--dtype", dtype], check=True, cwd=REPO)


def buildable(cfg: BenchConfig, profile: DeviceProfile) -> list[tuple[Format, Precision]]:
    """What the profile and --variants want built, less what the memory budget would skip anyway.

    A quantizer's source precision is built when needed even if it will not fit (ensure_variants)."""
    assert cfg.checkpoint is not None
    params = checkpoint_params(cfg.checkpoint)
    out = []
    for fmt, p in wanted_precisions(profile, cfg.variants):
        if fits_budget(p, params, profile):
            out.append((fmt, p))
        else:
            cfg.log.append(f"{fmt.name}:{p.name} is estimated over the {profile.name} budget: not built for itself "
                           f"(only when a quantizer reads it)")
    return out


def _image_size(checkpoint: Path | None) -> int:
    try:
        cfg = json.loads((checkpoint / "config.json").read_text())  # type: ignore[operator]
        return int(cfg["vision_config"]["image_size"])
    except (OSError, KeyError, ValueError, TypeError):
        return 336


def _variant_entry(v: Variant, profile: DeviceProfile) -> dict[str, Any]:
    """What is known before running: identity, sizes and the export step's parity figures."""
    parity = (v.manifest.parity or {}) if v.manifest else {}
    bits = get_format(v.format).precision(v.precision).bits_per_weight
    return {"name": v.name, "format": v.format, "precision": v.precision, "path": str(v.path),
            "size_bytes": v.size_bytes, "lm_bytes": v.lm_bytes, "est_memory_bytes": v.est_memory_bytes,
            "bits_per_weight": bits, "export_parity": parity.get("summary"),
            "reference": profile.is_reference(v.format, v.precision), "status": "pending", "predictions": {}}


def run_variant(v: Variant, entry: dict[str, Any], suites: list[Suite], cfg: BenchConfig, profile: DeviceProfile,
                cache: PredictionCache, probe: dict[str, Any], stand_in: str | None = None) -> None:
    """Generate the uncached predictions and time the variant in a fresh process; fill ``entry``.

    ``stand_in`` ("module:Class"): run the predictions with the format's stand-in runtime instead of
    its engine (not runnable on this host), and time nothing."""
    from allava.chat import prompt_text

    settings = {**profile.engine.get(v.format, {}), **cfg.engine.get(v.format, {})}
    try:
        vhash = cache.variant_hash([f for f in v.files if f.is_file()])
    except OSError as exc:
        entry.update(status="failed", reason=f"cannot read files: {exc}")
        return
    if settings:  # answers may depend on engine settings (e.g. flash attention): cache them apart
        vhash = hashlib.sha256((vhash + json.dumps(settings, sort_keys=True)).encode()).hexdigest()
    entry["variant_hash"] = vhash
    wanted: dict[str, tuple[Suite, Any, str]] = {}
    for s in suites:
        for it in s.items:
            prompt = prompt_text(s.adapter.prompt(it), with_image=it.image is not None)  # type: ignore[union-attr]
            wanted[prediction_key(vhash, s.name, it.id, prompt, s.max_new_tokens)] = (s, it, prompt)
    cached = cache.get_many(list(wanted))
    requests = [{"key": k, "prompt": p, "image": it.image, "has_image": it.image is not None,
                 "max_new_tokens": s.max_new_tokens} for k, (s, it, p) in wanted.items() if k not in cached]
    entry["cache"] = {"hits": len(cached), "generated": len(requests)}
    job = {"format": v.format, "path": str(v.path), "threads": profile.host_threads, "cpus": profile.cpus(),
           "latency": {**probe, "repeats": 0 if stand_in else cfg.repeats, "warmup": 0 if stand_in else cfg.warmup},
           "requests": requests, "runtime": stand_in, "settings": settings}
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        tdir = Path(tmp)
        (tdir / "job.pkl").write_bytes(pickle.dumps(job))
        env = {**os.environ, "OMP_NUM_THREADS": str(profile.host_threads), "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.harness.worker", str(tdir / "job.pkl"), str(tdir / "out")],
                                  capture_output=True, text=True, cwd=REPO, env=env, timeout=cfg.worker_timeout_s)
            rc, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stderr = -9, f"timed out after {cfg.worker_timeout_s:.0f} s: {exc.stderr or ''}"
        entry["wall_s"] = time.perf_counter() - t0
        res_path, pred_path = tdir / "out" / "result.json", tdir / "out" / "predictions.jsonl"
        res = json.loads(res_path.read_text()) if res_path.is_file() else {}
        fresh: dict[str, dict[str, Any]] = {}
        if pred_path.is_file():
            for line in pred_path.read_text().splitlines():
                row = json.loads(line)
                if "text" in row:
                    fresh[row["key"]] = row
    if fresh:
        cache.put_many([(k, v.name, wanted[k][0].name, wanted[k][1].id, r["text"], r["token_ids"])
                        for k, r in fresh.items()])
    for k, (s, it, _) in wanted.items():
        row = cached.get(k) or fresh.get(k)
        if row is not None:
            entry["predictions"].setdefault(s.name, {})[it.id] = row["text"]
    entry["peak_rss_mb"] = None if stand_in else res.get("peak_rss_mb")  # the stand-in's memory is not the engine's
    entry["load_s"] = None if stand_in else res.get("load_s")
    entry["load_wall_s"] = res.get("load_wall_s")
    reps = res.get("latency") or []
    entry["latency"] = latency.summarize(reps) if reps else {}
    entry["latency_repeats"] = reps
    entry["overhead"] = latency.overhead_ratio(reps)
    if entry["overhead"] is not None:
        entry["overhead"]["decode_loop"] = res.get("decode_loop")
    entry["runtime_build"] = res.get("build_info")
    entry["engine_settings"] = res.get("engine_settings")
    entry["memory"] = None if stand_in else memory.breakdown(res.get("memory_stages") or [], res.get("engine_memory"))
    entry["torch_imported"] = res.get("torch_imported")
    entry["prediction_errors"] = res.get("prediction_errors", 0)
    if rc == 0 and res.get("ok"):
        entry["status"] = "ok"
    else:
        reason = res.get("error") or f"worker exited with {rc}: {stderr.strip()[-800:]}"
        entry.update(status="failed", reason=reason)


def execute(cfg: BenchConfig) -> dict[str, Any]:
    """The whole run; returns the results dict (no files written here)."""
    t_start = time.perf_counter()
    profile = load_profile(cfg.device)  # unknown device: raises before any work
    names = parse_benchmarks(cfg.benchmarks)  # unknown benchmark: likewise
    default_paths(cfg, profile.name)
    assert cfg.checkpoint is not None and cfg.exports is not None and cfg.output_dir is not None
    if cfg.random_init:
        build_random_checkpoint(cfg.model, cfg.checkpoint)
    have_ckpt = (cfg.checkpoint / "config.json").is_file()
    if not cfg.exports.is_dir():
        cfg.log.append(f"export folder {cfg.exports} does not exist" + ("; building it" if have_ckpt and cfg.build_exports else ""))
    if have_ckpt and cfg.build_exports:
        ensure_variants(cfg.checkpoint, cfg.exports, buildable(cfg, profile), cfg.log, random_weights=cfg.random_init)
    variants = discover(cfg.exports, cfg.log)
    failed_pre: list[dict[str, Any]] = []
    if have_ckpt:
        variants.insert(0, pytorch_variant(cfg.checkpoint))
    else:
        failed_pre.append({"name": profile.reference, "format": profile.reference.split(":")[0],
                           "precision": profile.reference.split(":")[1], "path": str(cfg.checkpoint), "status": "failed",
                           "reference": True, "reason": f"checkpoint {cfg.checkpoint} not found (python train/run.py "
                                                        f"writes outputs/tiny)", "predictions": {}})
    sel = select(variants, profile, cfg.variants)
    sel.run.sort(key=lambda v: (not profile.is_reference(v.format, v.precision), -v.size_bytes))
    bandwidth = roofline.measure_bandwidth()
    suites = load_suites(names, cfg.world_root, cfg.bench_data, cfg.cache_dir / "world-sets", cfg.limit, cfg.seed, cfg.log)
    probe_item = next((it for s in suites for it in s.items if it.image is not None), None)
    probe = {"image": probe_item.image if probe_item else None, "image_size": _image_size(cfg.checkpoint),
             "prompt": _probe_prompt(), "max_new_tokens": cfg.latency_tokens}
    judge = None
    if cfg.judge_model:
        from bench.judge import judge_from_options

        judge = judge_from_options(cfg.judge_model, cfg.judge_base_url, cfg.output_dir)
    cache = PredictionCache(cfg.cache_dir / "predictions.sqlite")
    entries = []
    try:
        for v in sel.run:
            entry = _variant_entry(v, profile)
            entries.append(entry)
            fmt = get_format(v.format)
            stand_in = fmt.stand_in if v.not_runnable and fmt.stand_in_available() else None
            if v.not_runnable and not stand_in:  # listed with its size and export parity; nothing to time or score here
                entry.update(status="not runnable", reason=v.not_runnable, accuracy={})
                print(f"[bench] {v.name}: {v.not_runnable}", flush=True)
                continue
            if stand_in:  # answers from the stand-in (the packages' own programs), never its speed
                entry.update(latency_unavailable=v.not_runnable.replace("not runnable here: ", ""), executed_by=stand_in)
                print(f"[bench] {v.name}: {v.not_runnable}: scoring its answers with {stand_in}, no latency", flush=True)
            print(f"[bench] {v.name}: running ({sum(len(s.items) for s in suites)} items, {cfg.repeats} repeats)", flush=True)
            run_variant(v, entry, suites, cfg, profile, cache, probe, stand_in)
            _finish_entry(entry, suites, judge, bandwidth)
            if (entry.get("peak_rss_mb") or 0) * 2**20 > profile.memory_budget_bytes:
                entry["over_budget"] = (f"measured peak RSS {entry['peak_rss_mb']:.0f} MiB exceeds the "
                                        f"{profile.memory_budget_gib} GiB budget (the file-size estimate said it fits)")
            done = (f" ({entry.get('reason', '')[:200]})" if entry["status"] != "ok" else
                    f" answers only, {entry.get('wall_s', 0):.1f} s" if stand_in else
                    f" decode {entry['latency'].get('decode_tok_s', {}).get('median', 0):.1f} tok/s, {entry.get('wall_s', 0):.1f} s")
            print(f"[bench] {v.name}: {entry['status']}{done}", flush=True)
    finally:
        cache.close()
    entries = failed_pre + entries
    accuracy.add_deltas(entries, profile.reference, suites, judge=judge, seed=cfg.seed)  # paired intervals too
    ref_name = profile.reference
    return {"device": asdict(profile) | {"host_threads": profile.host_threads, "cpus": profile.cpus()},
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "log"},
            "reference": ref_name, "host": host_facts(), "bandwidth_gbs": bandwidth,
            "judge": cfg.judge_model, "judge_base_url": cfg.judge_base_url,
            "benchmarks": [s.to_dict() for s in suites], "variants": entries, "skipped": sel.skipped,
            "log": cfg.log, "elapsed_s": time.perf_counter() - t_start, "created": time.strftime("%Y-%m-%d %H:%M:%S")}


def _probe_prompt() -> str:
    from allava.chat import prompt_text

    return prompt_text(LATENCY_PROMPT, with_image=True)


def _finish_entry(entry: dict[str, Any], suites: list[Suite], judge: Any, bandwidth: float) -> None:
    dec = entry.get("latency", {}).get("decode_tok_s", {}).get("median")
    entry["roofline"] = ({"bytes_per_token": entry["lm_bytes"], "bandwidth_gbs": bandwidth,
                          "max_decode_tok_s": roofline.max_decode_tok_s(bandwidth, entry["lm_bytes"]),
                          "fraction": roofline.roofline_fraction(dec, entry["lm_bytes"], bandwidth)} if dec else None)
    if entry["status"] != "ok":
        entry["accuracy"] = {}
        return
    entry["accuracy"] = {s.name: accuracy.score_suite(s, entry["predictions"].get(s.name, {}), judge) for s in suites}
