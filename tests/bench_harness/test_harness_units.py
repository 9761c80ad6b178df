"""Fast unit tests: profiles, memory budget, benchmark names, roofline and latency math, cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.harness import latency, roofline
from bench.harness.cache import PredictionCache, prediction_key
from bench.harness.profiles import UnknownDeviceError, available_cpus, known_devices, load_profile
from bench.harness.suites import UnknownBenchmarkError, parse_benchmarks
from bench.harness.variants import Variant, select

REPO = Path(__file__).resolve().parents[2]


def test_profiles_load_and_cap_threads():
    assert {"mobile", "laptop", "desktop", "server-gpu"} <= set(known_devices())
    p = load_profile("mobile")
    assert p.threads == 4 and p.host_threads == min(4, len(available_cpus()))
    assert p.cpus() == available_cpus()[: p.host_threads]  # first-n affinity
    assert p.allows("gguf", "Q4_K_M") and p.allows("onnx", "int8") and p.allows("coreml", "FP16")
    assert not p.allows("gguf", "Q5_K_M") and p.is_reference("pytorch", "FP32")
    assert load_profile("server-gpu").allows("gguf", "Q6_K")


def test_unknown_device_lists_known():
    with pytest.raises(UnknownDeviceError) as e:
        load_profile("toaster")
    assert "toaster" in str(e.value) and "mobile" in str(e.value) and "server-gpu" in str(e.value)


def _v(fmt: str, prec: str, gib: float) -> Variant:
    n = int(gib * 2**30)
    return Variant(fmt, prec, Path(f"/x/{prec}"), n, n, n)


def test_memory_budget_skips_with_reason():
    p = load_profile("mobile")  # 4 GiB
    sel = select([_v("pytorch", "FP32", 12), _v("gguf", "F16", 6), _v("gguf", "Q4_K_M", 2), _v("gguf", "Q5_K_M", 1)],
                 p, None)
    assert [v.name for v in sel.run] == ["gguf:Q4_K_M"]  # Q5_K_M is not allowed on mobile: silently left out
    reasons = {s["variant"]: s["reason"] for s in sel.skipped}
    assert set(reasons) == {"pytorch:FP32", "gguf:F16"}
    assert "memory budget" in reasons["gguf:F16"] and "4.00 GiB" in reasons["gguf:F16"]


def test_variant_filter_keeps_reference():
    sel = select([_v("pytorch", "FP32", 0.1), _v("gguf", "Q8_0", 0.1), _v("gguf", "Q4_0", 0.1)], load_profile("mobile"),
                 ["q4_0"])
    assert [v.name for v in sel.run] == ["pytorch:FP32", "gguf:Q4_0"]


def test_benchmark_names():
    assert parse_benchmarks("none") == []
    assert parse_benchmarks("world") == ["world"]
    all_ = parse_benchmarks("all")
    assert all_[0] == "world" and len(all_) == 13 and "mme" in all_
    assert parse_benchmarks("world,MM-Vet,world") == ["world", "mmvet"]
    with pytest.raises(UnknownBenchmarkError) as e:
        parse_benchmarks("world,nosuch")
    msg = str(e.value)
    assert "nosuch" in msg and "gqa" in msg and "world" in msg and "none" in msg


def test_roofline_math():
    # 1 GB of weights per token at 10 GB/s: at most 10 tok/s; 5 tok/s is half the roofline
    assert roofline.max_decode_tok_s(10.0, 10**9) == pytest.approx(10.0)
    assert roofline.roofline_fraction(5.0, 10**9, 10.0) == pytest.approx(0.5)
    assert roofline.roofline_fraction(0.0, 10**9, 10.0) is None
    assert roofline.measure_bandwidth(mib=8, repeats=1) > 0.1


def test_latency_summary_and_overhead():
    reps = [{"decode_tok_s": d, "ttft_ms": 10.0, "perf": {"n_eval": 31, "t_eval_ms": 31e3 / ll}}
            for d, ll in ((90.0, 100.0), (95.0, 100.0), (99.0, 100.0))]
    s = latency.summarize(reps)
    assert s["decode_tok_s"]["median"] == 95.0 and s["decode_tok_s"]["min"] == 90.0 and s["ttft_ms"]["std"] == 0.0
    ov = latency.overhead_ratio(reps)
    assert ov is not None and ov["ratio"] == pytest.approx(0.95) and ov["native_decode_tok_s"] == pytest.approx(100.0)
    assert latency.overhead_ratio([{"decode_tok_s": 5.0, "perf": None}]) is None


def test_prediction_cache(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    c = PredictionCache(tmp_path / "c.sqlite")
    h1 = c.variant_hash([f])
    k = prediction_key(h1, "world", "q1", "prompt", 8)
    assert k != prediction_key(h1, "world", "q1", "prompt2", 8) != prediction_key(h1, "world", "q2", "prompt", 8)
    c.put_many([(k, "gguf:Q4_0", "world", "q1", "red", [5, 2])])
    assert c.get_many([k, "missing"]) == {k: {"text": "red", "token_ids": [5, 2]}}
    f.write_bytes(b"abcd")  # a re-export changes the hash, so old predictions no longer match
    assert c.variant_hash([f]) != h1
    c.close()


QUANTIZER = '''
import json, sys
from pathlib import Path
from allava.variant import Manifest

args = sys.argv[1:]
ckpt, out = Path(args[0]), Path(args[args.index("--outdir") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "argv.json").write_text(json.dumps(args))
Manifest.for_files(out, {"model": out / "argv.json"}, format="fromckpt", precision=out.name,
                   source={"checkpoint": str(ckpt.resolve())}, created_by="test").write(out)
'''


def test_quantizer_from_checkpoint_runs_once_per_precision(tiny_ckpt: Path, tmp_path: Path, monkeypatch):
    """A format its quantizer makes straight from the checkpoint (as GPTQ): the bench runs the command
    once per precision with the checkpoint, adds the table's random-weights options only for random
    weights, and finds the variants by their manifests."""
    import allava.formats as formats
    from allava.formats import Format, Precision, StageCommand
    from bench.harness.variants import discover, ensure_variants

    (tmp_path / "fromckpt_quant.py").write_text(QUANTIZER)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{REPO}")
    fmt = Format(name="fromckpt", runtime="runtimes.torch_runtime:TorchRuntime", folder="fromckpt",
                 precisions=(Precision("A4", 4.0, ("quantize",)), Precision("B8", 8.0, ("quantize",))),
                 quantize=StageCommand("fromckpt_quant", ("{checkpoint}", "--outdir", "{outdir}/{name}",
                                                          "--precision", "{precision}")),
                 random_weights_args=("--n-samples", "2"))
    monkeypatch.setitem(formats._TABLE, "fromckpt", fmt)
    log: list[str] = []
    ensure_variants(tiny_ckpt, tmp_path / "exports", [(fmt, p) for p in fmt.precisions], log, random_weights=True)
    assert log == ["quantize fromckpt:A4: ok", "quantize fromckpt:B8: ok"], log
    argv = json.loads((tmp_path / "exports/fromckpt/A4/argv.json").read_text())
    assert argv == [str(tiny_ckpt), "--outdir", str(tmp_path / "exports/fromckpt/A4"), "--precision", "a4",
                    "--n-samples", "2"]
    assert sorted(v.precision for v in discover(tmp_path / "exports")) == ["A4", "B8"]
    log.clear()
    ensure_variants(tiny_ckpt, tmp_path / "exports", [(fmt, p) for p in fmt.precisions], log)
    assert log == []  # fresh variants of the same checkpoint are not rebuilt
    (tmp_path / "exports2").mkdir()
    ensure_variants(tiny_ckpt, tmp_path / "exports2", [(fmt, fmt.precisions[0])], log)
    assert "--n-samples" not in json.loads((tmp_path / "exports2/fromckpt/A4/argv.json").read_text())
