"""One variant in one fresh process: load, latency repeats, then the uncached predictions.

Why a process per variant: peak RSS (ru_maxrss) is per process, so only a fresh process gives each
variant its own memory figure; a native crash (a truncated GGUF that slips past the header check)
kills only this variant; and CPU affinity / thread counts are set before any library starts its pool.

  python -m bench.harness.worker JOB.pkl OUT_DIR

writes OUT_DIR/result.json (load, latency, errors, memory stages) and OUT_DIR/predictions.jsonl (one
line per generated item, flushed as it goes, so a crash mid-way keeps what was done).

Memory: /proc snapshots at each stage (runtimes/memory_stats.py) and the engine's own statement of
its buffers (``engine_memory``) go into result.json; bench/harness/memory.py turns them into the
breakdown. The worker imports no torch for a GGUF or ONNX variant (``torch_imported`` records it):
its peak is the format's, not PyTorch's.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _image(src: Any, size: int):
    from PIL import Image

    if src is None:
        return _probe_image(size)
    with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as img:
        return img.convert("RGB")


def _probe_image(size: int):
    """A deterministic synthetic picture (shapes on a gradient) when no benchmark image exists."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size))
    px = img.load()
    for y in range(size):
        for x in range(size):
            px[x, y] = (x * 255 // size, y * 255 // size, 128)
    d = ImageDraw.Draw(img)
    d.ellipse([size // 8, size // 8, size // 2, size // 2], fill=(220, 30, 30))
    d.rectangle([size // 2, size // 2, size * 7 // 8, size * 7 // 8], fill=(30, 30, 220))
    return img


def _perf(rt: Any) -> dict[str, float] | None:
    """The runtime's own counters for the last generation, when it has them (e.g. llama.cpp's perf context)."""
    return rt.perf_counters() if rt.supports("perf_counters") else None


def _perf_reset(rt: Any) -> None:
    if rt.supports("perf_counters"):
        rt.reset_perf_counters()


def _engine_memory(rt: Any) -> dict[str, Any]:
    fn = getattr(rt, "engine_memory", None)
    return fn() if callable(fn) else {}


def run(job: dict[str, Any], out_dir: Path) -> int:
    from runtimes.memory_stats import snapshot

    stages = [snapshot("start")]
    from runtimes import load_runtime
    from runtimes.base import peak_rss_mb

    result: dict[str, Any] = {"ok": False, "pid": os.getpid(), "memory_stages": stages}
    res_path = out_dir / "result.json"
    files: list[str] = []

    def stage(name: str) -> None:
        stages.append(snapshot(name, files))

    def dump() -> None:
        result["peak_rss_mb"] = peak_rss_mb()
        result["torch_imported"] = "torch" in sys.modules
        res_path.write_text(json.dumps(result, indent=1))

    if job.get("cpus"):
        os.sched_setaffinity(0, job["cpus"])
    result["cpus"] = sorted(os.sched_getaffinity(0))
    _image(None, 8)  # PIL's drawing modules: imported before the engine, counted as harness
    stage("before_load")
    try:
        t0 = time.perf_counter()
        if job.get("runtime"):  # the format's stand-in (the engine cannot run on this host)
            import importlib

            mod, cls = job["runtime"].split(":")
            rt = getattr(importlib.import_module(mod), cls)().load(job["path"], job["threads"])
        else:
            rt = load_runtime(job["path"], job["threads"], fmt=job["format"], settings=job.get("settings"))
        result["load_wall_s"] = time.perf_counter() - t0  # imports included
        result["load_s"] = getattr(rt, "load_s", None) or result["load_wall_s"]
    except Exception as exc:  # noqa: BLE001 - any load failure is a reported variant status
        result["error"] = f"load failed: {type(exc).__name__}: {exc}"
        dump()
        return 2
    result["rss_after_load_mb"] = peak_rss_mb()
    files[:] = [str(f) for f in getattr(rt, "files", [])]
    stage("after_load")
    result["decode_loop"] = getattr(rt, "decode_loop", None)  # e.g. a compiled or an interpreted decode loop
    result["build_info"] = rt.build_info() if rt.supports("build_info") else None
    result["engine_settings"] = getattr(rt, "settings", None) or job.get("settings") or None  # the values in effect
    lat = job["latency"]
    try:
        if lat["repeats"] > 0:
            image = _image(lat["image"], lat["image_size"])
            for _ in range(lat["warmup"]):
                rt.generate(image, lat["prompt"], lat["max_new_tokens"], ignore_eos=True)
            reps = []
            for _ in range(lat["repeats"]):
                _perf_reset(rt)
                g = rt.generate(image, lat["prompt"], lat["max_new_tokens"], ignore_eos=True)
                reps.append({**g.timings.as_dict(), "peak_rss_mb": peak_rss_mb(), "perf": _perf(rt)})
                if len(reps) == 1:
                    stage("after_generation")
            result["latency"] = reps
    except Exception as exc:  # noqa: BLE001
        result["error"] = f"generation failed: {type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-2000:]
        dump()
        return 3
    errors = 0
    t_pred = time.perf_counter()
    with open(out_dir / "predictions.jsonl", "a", encoding="utf-8") as fh:
        for req in job["requests"]:
            try:
                g = rt.generate(_image(req["image"], lat["image_size"]) if req["has_image"] else None,
                                req["prompt"], req["max_new_tokens"])
                row = {"key": req["key"], "text": g.text.strip(), "token_ids": g.token_ids}
            except Exception as exc:  # noqa: BLE001 - one bad item must not end the variant
                errors += 1
                row = {"key": req["key"], "error": f"{type(exc).__name__}: {exc}"}
            fh.write(json.dumps(row) + "\n")
            fh.flush()
    result.update(ok=True, prediction_s=time.perf_counter() - t_pred, n_requests=len(job["requests"]),
                  prediction_errors=errors)
    stage("end")
    result["engine_memory"] = _engine_memory(rt)
    result["engine_settings"] = getattr(rt, "settings", None) or result["engine_settings"]  # e.g. a grown context
    dump()
    rt.close()
    return 0


def main(argv: list[str]) -> int:
    job = pickle.loads(Path(argv[0]).read_bytes())
    out_dir = Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    return run(job, out_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
