"""Benchmark: a random-init ALLaVA-3B (CLIP ViT-L/14-336 + Phi-2) through GGUF F16 and Q4_K_M in llama.cpp.

Not a test: it builds a full-size model (3.1B parameters) to measure file sizes and CPU latency of
the on-device path. Weights are random (no download), so the text is noise; sizes and timings are
what matter. The model is built in bf16 (12 GB in fp32 would not fit comfortably next to the
export on a 24 GB machine) and exported tensor by tensor.

  python bench/gguf_allava3b.py --workdir outputs/bench-allava3b [--threads N] [--types f16,q4_k_m]
"""

import pathlib
import sys

sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # repo root, so `import export.x` works

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402


def build_checkpoint(out: Path) -> float:
    import torch

    from allava.modeling import build_model, build_processor, load_preset
    from allava.tokenizer import train_bpe_tokenizer

    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return 0.0
    t0 = time.time()
    texts = ["a red circle left of a blue square", "what colour is the large triangle?",
             "there are three shapes on a grey background", "the small green circle is above the cat"] * 200
    tok = train_bpe_tokenizer(texts, 1024)  # Phi-2's tokenizer needs a download; rows are padded to 51200
    preset = load_preset("allava-3b")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise directly in bf16: peak ~6 GB instead of 12+6
    try:
        model = build_model(preset, tok, random_init=True, dtype=torch.bfloat16)
    finally:
        torch.set_default_dtype(old)
    proc = build_processor(preset, tok)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="2GB")
    proc.save_pretrained(tmp)
    del model
    tmp.rename(out)
    return time.time() - t0


def measure(vdir: Path, threads: int | None, max_new_tokens: int, runs: int) -> dict:
    """Load one variant, warm up once, time `runs` generations on a 336 px image; last run's timings."""
    from allava.chat import prompt_text
    from export.parity import synthetic_prompts
    from runtimes.llamacpp_runtime import LlamaCppRuntime

    image = synthetic_prompts(1, 336, seed=1)[0].image
    prompt = prompt_text("What is in the image?")
    rt = LlamaCppRuntime().load(vdir, threads)
    rt.generate(image, prompt, 2)  # warm-up (page cache, allocations)
    res = [rt.generate(image, prompt, max_new_tokens) for _ in range(runs)]
    rt.close()
    return res[-1].timings.as_dict()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("outputs/bench-allava3b"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--types", default="f16,q4_k_m", help="variants to load (f16 is always exported)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--runs", type=int, default=1, help="timed generations per variant (after one warm-up)")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one variant
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if a.measure:
        print(json.dumps(measure(a.measure, a.threads, a.max_new_tokens, a.runs)))
        return 0
    from allava.variant import human_size, read_manifest
    from export.to_gguf import export_gguf
    from quantize.run import quantize_gguf
    from runtimes.llamacpp_runtime import build_info

    hf = a.workdir / "hf"
    gg = a.workdir / "gguf"
    a.workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"build": build_info()}
    t = build_checkpoint(hf)
    report["build_checkpoint_s"] = round(t, 1)
    print(f"checkpoint {hf} ({t:.0f} s)", flush=True)
    if not (gg / "F16" / "manifest.json").is_file():
        t0 = time.time()
        export_gguf(hf, gg, "f16", name="allava-3b-random")
        report["export_f16_s"] = round(time.time() - t0, 1)
    types = [x.strip().lower() for x in a.types.split(",") if x.strip()]
    for q in types:
        if q != "f16" and not (gg / q.upper() / "manifest.json").is_file():
            t0 = time.time()
            quantize_gguf(gg, q, a.threads)
            report[f"quantize_{q}_s"] = round(time.time() - t0, 1)
    report["variants"] = {}
    for q in types:
        vdir = gg / q.upper()
        man = read_manifest(vdir)
        # a fresh process per variant: peak RSS then belongs to that variant alone
        cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(vdir),
               "--max-new-tokens", str(a.max_new_tokens), "--runs", str(a.runs)]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{man['precision']}: measurement failed: {out.stderr[-500:]}")
            continue
        tm = json.loads(out.stdout.strip().splitlines()[-1])
        report["variants"][man["precision"]] = {"sizes": man["sizes"], "timings": tm}
        print(f"{man['precision']:<7} LM {human_size(man['sizes']['model']):>10} ({man['sizes']['model']/1e9:.2f} GB)  "
              f"mmproj {human_size(man['sizes']['mmproj']):>10}  load {tm['load_s']:.1f} s  "
              f"image encode {tm['image_encode_ms']:.0f} ms  TTFT {tm['ttft_ms']:.0f} ms  "
              f"prefill {tm['prefill_tok_s']:.1f} tok/s  decode {tm['decode_tok_s']:.2f} tok/s  "
              f"peak RSS {tm['peak_rss_mb']:.0f} MiB", flush=True)
    (a.workdir / "results.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {a.workdir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
