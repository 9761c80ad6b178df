"""Peak RSS and its breakdown per full-size ALLaVA-3B variant, before/after the memory cuts (docs/memory.md).

Each (variant, engine settings) runs in a fresh bench worker (bench/harness/worker.py: the
process the bench measures) that answers one image question (the 336 px probe picture, 32 new
tokens); the breakdown is bench/harness/memory.py's. ONNX Q4 (onnx/variants/Q4): its token table as
quantize/run.py --embed-table wrote it; "release vision" frees the vision session after encoding; "no
prepack" leaves MatMulNBits weights unpacked (mapped from the file). The decode tok/s printed beside each
row is from the same untimed run (not under the timing lock): an indication, not a timing. "before" is the previous defaults
(n_ctx = the training context 2048, weights memory-mapped), "after" the new ones.

  python bench/experiments/memory_allava3b.py [--variants gguf/Q4_K_M,onnx/variants/INT8] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BEFORE = {"gguf": {"n_ctx": 2048, "mmap": True}, "onnx": {}}
AFTER = {"gguf": {}, "onnx": {}}
EXTRA = {"onnx": {"release vision": {"release_vision": True},  # the mobile profile's setting
                  "arena off": {"cpu_mem_arena": False},
                  "arena off + release vision": {"cpu_mem_arena": False, "release_vision": True},
                  "arena off + release vision + no prepack": {"cpu_mem_arena": False, "release_vision": True,
                                                              "prepack": False}}, "gguf": {}}


def run_worker(fmt: str, path: Path, settings: dict) -> dict:
    from allava.chat import prompt_text
    from bench.harness import memory

    job = {"format": fmt, "path": str(path), "threads": 2, "cpus": None, "runtime": None, "settings": settings,
           "latency": {"image": None, "image_size": 336, "prompt": prompt_text("Describe the image in detail.", with_image=True),
                       "max_new_tokens": 32, "repeats": 1, "warmup": 0}, "requests": []}
    with tempfile.TemporaryDirectory() as td:
        (Path(td) / "job.pkl").write_bytes(pickle.dumps(job))
        subprocess.run([sys.executable, "-m", "bench.harness.worker", str(Path(td) / "job.pkl"), str(Path(td) / "out")],
                       cwd=ROOT, capture_output=True)
        res = json.loads((Path(td) / "out" / "result.json").read_text())
    lat = (res.get("latency") or [{}])[0]
    return {"ok": res.get("ok"), "error": res.get("error"), "peak_mib": res.get("peak_rss_mb"),
            "decode_tok_s_untimed": lat.get("decode_tok_s"), "image_encode_ms_untimed": lat.get("image_encode_ms"),
            "torch_imported": res.get("torch_imported"), "engine_settings": res.get("engine_settings"),
            "memory": memory.breakdown(res.get("memory_stages") or [], res.get("engine_memory"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT / "outputs/bench-allava3b")
    ap.add_argument("--variants", default="gguf/Q4_K_M,gguf/Q4_K_M-VQ8_0,gguf/Q4_0,gguf/Q4_0-VQ8_0,gguf/Q8_0,"
                                          "gguf/Q8_0-VQ8_0,onnx/variants/INT8")
    ap.add_argument("--which", default="before,after,extra")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    rows = list(measure_all(args.root, args.variants.split(","), args.which.split(",")))
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return 0


def _manifest_extra(vdir: Path) -> dict:
    from allava.variant import Manifest

    try:
        return Manifest.read(vdir).extra
    except (OSError, ValueError):
        return {}


def measure_all(root: Path, variants: list[str], which: list[str]):
    """One row per (variant, run), printed as it comes."""
    for rel in variants:
        fmt = rel.split("/")[0]
        runs = {"before": BEFORE[fmt], "after": AFTER[fmt], **EXTRA[fmt]}
        for name, settings in runs.items():
            wanted = name in which or ("extra" in which and name in EXTRA[fmt])
            if not wanted or (name == "before" and fmt == "onnx"):  # ONNX Runtime's defaults did not change
                continue
            r = run_worker(fmt, root / rel, settings)
            emb = (_manifest_extra(root / rel).get("embed_table") if fmt == "onnx" else None)
            comps = {c["name"]: c["mib"] for c in (r["memory"] or {}).get("components", [])}
            row = {"variant": rel, "run": name, "settings": settings, "embed_table": emb,
                   **{k: r[k] for k in ("ok", "error", "peak_mib", "torch_imported", "decode_tok_s_untimed",
                                        "image_encode_ms_untimed")},
                   "n_ctx": (r["engine_settings"] or {}).get("n_ctx"), "components": comps}
            print(json.dumps(row), flush=True)
            yield row

if __name__ == "__main__":
    sys.exit(main())
