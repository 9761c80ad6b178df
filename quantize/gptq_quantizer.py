"""GPTQ: the language model in 4 or 8 bits with GPTQModel, calibrated on ALLaVA-4V data with images.

  python quantize/run.py --format gptq --bits 4 --group-size 128 outputs/tiny --outdir outputs/exports/gptq/W4G128
  python quantize/run.py --format gptq --bits 4 --calibration my-allava.json --images my-images --n-samples 128 CKPT --outdir DIR
  python quantize/run.py --format gptq --bits 4 --text-only CKPT --outdir DIR   # calibrate on the text alone

The output is a transformers model folder (config.json with `quantization_config`, GPTQ v1 weights:
qweight/qzeros int32, scales fp16, g_idx), the processor, tokenizer and chat template, and the
variant manifest. It loads with plain `LlavaForConditionalGeneration.from_pretrained(DIR)` where
gptqmodel and optimum are installed, and vLLM/SGLang read the same format. Only the language model's
linear layers are quantized (quantize/gptq_llava.py); vision tower, projector, embeddings and
lm_head stay in half precision.

Calibration (quantize/gptq_calibration.py) defaults to the built-in world's caption-then-QA
conversations (outputs/world/ALLaVA-Instruct-World.json, or the same generator's first 512 scenes
built into the user cache when training has not run) with their images, 128 samples, seed 0.

Crash safety: the folder is written under a temporary name beside --outdir and renamed when
complete and read back, so --outdir is either the previous variant or the new one; a run that
died leaves only the temporary folder, which the next run removes and redoes (GPTQModel cannot
resume a half-quantized model: restart is the recovery, and the same seed gives the same samples).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from allava.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from allava.cli import exit_code
from allava.fileio import disk_full_as, missing_folders, remove_empty
from allava.formats import UnknownFormatError, get_format
from allava.memory import peak_rss_mb
from allava.variant import MANIFEST, Manifest, ManifestError, human_size
from allava.weights_index import is_language_model, tensor_entries
from quantize.gptq_calibration import (
    CalibrationError,
    CalibrationSpec,
    add_calibration_args,
    build_samples,
    default_data,
    spec_from_args,
)

FORMAT = "gptq"
GROUP_SIZES = (32, 64, 128, -1)  # -1: one group per row (per-channel)
PARTIAL_SUFFIX = ".partial"


class GptqError(RuntimeError):
    """The checkpoint cannot be quantized as asked; the message says which file or option and why."""


def precision_name(bits: int, group_size: int) -> str:
    """"W4G128": what manifests, the format table and reports call a GPTQ variant."""
    return f"W{bits}G{group_size if group_size > 0 else 'C'}"


def parse_precision(name: str) -> tuple[int, int]:
    """Inverse of precision_name, for ``--precision w4g128`` (the bench's way to ask for a table entry)."""
    get_format(FORMAT).precision(name)  # unknown names fail with the known ones listed
    bits, group = name.upper()[1:].split("G")
    return int(bits), (-1 if group == "C" else int(group))


def check_outdir(outdir: Path) -> None:
    """--outdir must be new, empty or a GPTQ variant (replaced); anything else is refused untouched."""
    if not outdir.exists():
        return
    if not outdir.is_dir():
        raise GptqError(f"{outdir}: exists and is not a folder")
    if not any(outdir.iterdir()):
        return
    try:
        man = Manifest.read(outdir)
    except (FileNotFoundError, ManifestError) as exc:
        raise GptqError(f"{outdir}: exists with other content (no GPTQ {MANIFEST}); choose another --outdir") from exc
    if man.format != FORMAT:
        raise GptqError(f"{outdir}: holds a {man.format} variant, not GPTQ; choose another --outdir")


def lm_weight_bytes(folder: Path) -> int:
    """Bytes of the language model's weights in the saved safetensors (the roofline reads these per
    token; the vision tower and projector sit in the same file but run once per image)."""
    return sum(meta["data_offsets"][1] - meta["data_offsets"][0]
               for key, meta in tensor_entries(folder) if is_language_model(key))


def _device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise GptqError("--device cuda: no CUDA device is visible to torch")
    return requested


def store_dense_in_fp16(folder: Path) -> None:
    """The layers GPTQ leaves dense (vision tower, projector, embeddings, lm_head, norms, biases) in
    float16, as GPTQ checkpoints ship them: GPTQModel saves them in the dtype it quantized in (float32
    here, for exact Hessians on CPUs without native half precision), which would double the ~0.6 B
    dense parameters of ALLaVA-3B on disk. Each file is rewritten atomically."""
    import torch
    from safetensors.torch import load_file, save_file

    from allava.fileio import atomic_path

    for f in sorted(folder.glob("*.safetensors")):
        tensors = load_file(str(f))
        if not any(t.dtype == torch.float32 for t in tensors.values()):
            continue
        tensors = {k: (t.to(torch.float16) if t.dtype == torch.float32 else t) for k, t in tensors.items()}
        with atomic_path(f) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for c in (cfg, cfg.get("text_config") or {}, cfg.get("vision_config") or {}):
        if "dtype" in c:
            c["dtype"] = "float16"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


@contextmanager
def _logs_out_of_cwd() -> Iterator[None]:
    """GPTQModel 7.x writes a log file per run into ./logs of the current folder; send it to a
    temporary folder, removed afterwards. Its per-layer losses stay in the variant as
    quant_log.csv, which GPTQModel saves there."""
    folder = Path(tempfile.mkdtemp(prefix="gptq-logs-"))
    try:
        from gptqmodel.looper import loop_processor

        if hasattr(loop_processor, "_PROJECT_LOG_DIR"):
            loop_processor._PROJECT_LOG_DIR = folder
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read_back(folder: Path, sample: dict[str, Any], bits: int) -> None:
    """Load the written folder the way users will (transformers + optimum + gptqmodel) and run one
    calibration sample: a folder that does not load or gives non-finite logits is not published."""
    import torch
    from transformers import LlavaForConditionalGeneration

    cfg = json.loads((folder / "config.json").read_text()).get("quantization_config") or {}
    if cfg.get("quant_method") != "gptq" or cfg.get("bits") != bits:
        raise GptqError(f"{folder}/config.json: quantization_config is {cfg!r}, expected gptq with {bits} bits")
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.bfloat16).eval()
    with torch.inference_mode():
        logits = model(**{k: v for k, v in sample.items()}).logits
    if not torch.isfinite(logits).all():
        raise GptqError(f"{folder}: the quantized model gives non-finite logits on a calibration sample")


def quantize_gptq(checkpoint: str | Path, outdir: str | Path, bits: int = 4, group_size: int = 128,
                  desc_act: bool = False, calibration: CalibrationSpec | None = None,
                  device: str = "auto", threads: int | None = None) -> Path:
    """Quantize ``checkpoint`` into the variant folder ``outdir``; returns it."""
    if bits not in (4, 8):
        raise GptqError(f"--bits {bits}: GPTQ variants here are 4 or 8 bits")
    if group_size not in GROUP_SIZES:
        raise GptqError(f"--group-size {group_size}: choose from {', '.join(map(str, GROUP_SIZES))}")
    ck = open_checkpoint(checkpoint)
    outdir = Path(outdir)
    check_outdir(outdir)
    if calibration is None:
        data = default_data()
        calibration = CalibrationSpec(data, data.parent, 128)
    if not calibration.data.is_file():
        raise CalibrationError(f"{calibration.data}: calibration data not found (expected an ALLaVA-4V JSON file; "
                               "without --calibration the built-in world is used)")

    # GPTQModel's CPU thread pool: its model loader asks for 2 workers, so fewer fails at load
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, threads or os.cpu_count() or 1)))
    import torch

    if threads:
        torch.set_num_threads(threads)
    try:
        import gptqmodel  # noqa: F401 - fail here with the install hint, not deep inside
    except ImportError as exc:
        raise GptqError("gptqmodel is not installed: pip install 'allava-edge[gptq]' (scripts/install.sh installs it)") from exc
    from quantize.gptq_llava import register

    register()
    created = missing_folders(outdir.parent)
    lm = sum(math.prod(s) for n, s in ck.shapes.items() if n.startswith(("text.", "lm_head.")))
    needed = int(lm * bits / 8 + (sum(math.prod(s) for s in ck.shapes.values()) - lm) * 2)  # ~ LM packed, rest fp16
    try:
        with _logs_out_of_cwd(), disk_full_as(outdir, needed):
            return _quantize_into(ck, outdir, bits, group_size, desc_act, calibration, _device(device))
    except BaseException:
        remove_empty(created)  # the partial folder is gone already (_quantize_into); no empty parents either
        raise


def _quantize_into(ck: Checkpoint, outdir: Path, bits: int, group_size: int, desc_act: bool,
                   calibration: CalibrationSpec, device: str) -> Path:
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(ck.path)
    samples = build_samples(calibration, processor)
    print(f"gptq: {len(samples)} {calibration.describe()['kind']} calibration samples from {calibration.data} "
          f"(seed {calibration.seed})", flush=True)

    partial = outdir.with_name(outdir.name + PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)  # a crashed run's leftovers: restart
    torch.manual_seed(calibration.seed)
    t0 = time.perf_counter()
    qcfg = QuantizeConfig(bits=bits, group_size=group_size, desc_act=desc_act, sym=True, device=device,
                          offload_to_disk=False)  # transformers-5 checkpoints store legacy key names that
    # GPTQModel's lazy disk loader does not map (embeddings stay on the meta device); load in memory
    model = GPTQModel.load(str(ck.path), qcfg, dtype=torch.float32 if device == "cpu" else torch.float16)
    model.quantize(samples, batch_size=1)
    quantize_s = time.perf_counter() - t0
    try:
        model.save(str(partial))
        del model  # the float32 model (12 GB at full size) is not needed for the rewrite and read-back
        gc.collect()
        processor.save_pretrained(partial)  # processor/preprocessor config, tokenizer, chat template
        store_dense_in_fp16(partial)
        _read_back(partial, samples[0], bits)
        weights = sorted(partial.glob("*.safetensors"))
        files: dict[str, Path] = {"config": partial / "config.json"}
        files.update({("model" if i == 0 else f"model_{i}"): w for i, w in enumerate(weights)})
        if (partial / "model.safetensors.index.json").is_file():
            files["index"] = partial / "model.safetensors.index.json"
        import gptqmodel

        man = Manifest.for_files(
            partial, files, format=FORMAT, precision=precision_name(bits, group_size),
            source={"checkpoint": str(ck.path.resolve()), "sha256": ck.fingerprint()},
            created_by=f"quantize/gptq_quantizer.py (gptqmodel {gptqmodel.__version__})",
            name=outdir.name, runtime=get_format(FORMAT).runtime,
            bits=bits, group_size=group_size, desc_act=desc_act, sym=True, checkpoint_format="gptq",
            calibration=calibration.describe(), quantize_s=round(quantize_s, 1), device=device,
            peak_rss_mb=round(peak_rss_mb()), lm_bytes=lm_weight_bytes(partial),
        )
        man.write(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if outdir.exists():
        old = outdir.with_name(outdir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        outdir.rename(old)
        partial.rename(outdir)
        shutil.rmtree(old)
    else:
        outdir.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(outdir)
    print(f"gptq: {man.precision} -> {outdir} ({human_size(man.total_bytes)}; language model "
          f"{human_size(man.extra['lm_bytes'])}) in {quantize_s:.0f} s, peak RSS {man.extra['peak_rss_mb']:,} MiB",
          flush=True)
    return outdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python quantize/run.py --format gptq", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="Hugging Face LLaVA-Phi folder (python train/run.py writes one)")
    ap.add_argument("--outdir", required=True, help="the variant folder to write (a transformers model folder)")
    ap.add_argument("--bits", type=int, default=4, help="weight bits: 4 or 8 (default 4)")
    ap.add_argument("--group-size", type=int, default=128,
                    help=f"weights per scale/zero group: {', '.join(map(str, GROUP_SIZES))} (-1: per row); default 128")
    ap.add_argument("--desc-act", action="store_true",
                    help="act-order: quantize columns by decreasing activation size (slower kernels; default off)")
    ap.add_argument("--precision", help="a format-table name such as w4g128 instead of --bits/--group-size")
    add_calibration_args(ap, "ALLaVA-4V JSON to calibrate on (default: the built-in world's ALLaVA-Instruct-World.json)",
                         "calibration samples")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where GPTQ runs (auto: CUDA when visible, else CPU)")
    ap.add_argument("--threads", type=int, help="CPU threads (default: all)")
    a = ap.parse_args(argv)

    def run() -> None:
        bits, group = parse_precision(a.precision) if a.precision else (a.bits, a.group_size)
        spec = spec_from_args(a)
        quantize_gptq(a.checkpoint, a.outdir, bits, group, a.desc_act, spec, a.device, a.threads)

    return exit_code(run, GptqError, CheckpointError, CalibrationError, UnknownFormatError)


if __name__ == "__main__":
    sys.exit(main())
