"""Where a variant's peak memory goes: the worker's /proc snapshots + the engine's own statements.

Why a breakdown and not only peak RSS: a peak over a device's budget says nothing about what to
cut. The worker (worker.py) takes a snapshot (runtimes/memory_stats.py) at each stage: ``start``,
``before_load`` (interpreter, harness, numpy/PIL imported), ``after_load``, ``after_generation``
(one image question answered), ``end``. The engine says what it allocated (llama.cpp's buffer
lines, ONNX Runtime's per-session deltas: ``Runtime.engine_memory``).

The components add up to the peak by construction, so nothing is hidden:

  peak = VmRSS before load                          (interpreter + harness + their libraries)
       + engine libraries' file pages               (RssFile growth that is not a model file)
       + model files' resident mapped pages         (weights used in place from the page cache)
       + each anonymous part the engine states      (KV cache, compute buffers, copies of weights)
       + other anonymous growth                     (RssAnon growth the engine does not state;
                                                     negative when a stated buffer was never all touched)
       + transient                                  (VmHWM - VmRSS at the end: freed before the end)
"""

from __future__ import annotations

from typing import Any

METHOD = {
    "before_load": "VmRSS (/proc/self/status) after the interpreter, harness, numpy and PIL are imported, before the engine",
    "engine_libraries": "RssFile growth from before load to the end, less the model files' mapped pages",
    "weights_mapped": "Rss of the model files' mappings (/proc/self/smaps) at the end",
    "stated": "the engine's own statement of the buffer it allocated (llama.cpp/libmtmd log lines; "
              "ONNX Runtime: RssAnon growth around each InferenceSession)",
    "other_anon": "RssAnon growth from before load to the end, less the stated parts (residual)",
    "transient": "VmHWM - VmRSS at the end: memory held at the peak and freed before the end",
}


def _largest(stages: list[dict[str, Any]], key: str) -> float:
    return max((float(s.get(key) or 0.0) for s in stages), default=0.0)


def breakdown(stages: list[dict[str, Any]], engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The variant's memory entry for results.json from the worker's stage snapshots (see module doc).

    ``stages`` must hold ``before_load`` and a final stage; anything missing (no /proc) gives {}."""
    by = {s["stage"]: s for s in stages}
    base, end = by.get("before_load"), stages[-1] if stages else None
    if not base or not end or "VmRSS" not in base or "VmRSS" not in end:
        return {}
    engine = engine or {}
    mapped = max((sum((s.get("files_mapped") or {}).values()) for s in stages), default=0.0)
    end_mapped = sum((end.get("files_mapped") or {}).values())
    stated = {k: float(v) for k, v in (engine.get("components_mib") or {}).items() if "mapped" not in k}
    peak = float(end.get("VmHWM") or _largest(stages, "VmHWM"))
    rows = [("interpreter and harness (before load)", base["VmRSS"], METHOD["before_load"]),
            ("engine libraries (code pages)", end["RssFile"] - end_mapped - base["RssFile"], METHOD["engine_libraries"]),
            ("weights mapped from the model files", end_mapped, METHOD["weights_mapped"])]
    rows += [(f"{k} (engine statement)", v, METHOD["stated"]) for k, v in stated.items()]
    rows.append(("other anonymous memory", end["RssAnon"] - base["RssAnon"] - sum(stated.values()), METHOD["other_anon"]))
    rows.append(("transient (freed before the end)", peak - end["VmRSS"], METHOD["transient"]))
    return {
        "peak_mib": round(peak, 1),
        "components": [{"name": n, "mib": round(float(v), 1), "method": m} for n, v, m in rows],
        "weights_mapped_max_mib": round(mapped, 1),
        "engine": engine,
        "stages": [{k: (round(v, 1) if isinstance(v, float) and k != "t" else v) for k, v in s.items()} for s in stages],
    }
