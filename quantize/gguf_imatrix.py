"""Importance matrix for llama.cpp's quantizer, computed on image + text forward passes in PyTorch.

Why PyTorch and not llama.cpp: ``llama-imatrix`` links no libmtmd, so it can only see token
embeddings; in a LLaVA prompt most positions are projector outputs (576 of ~600 for ALLaVA-3B).
Hooks on every linear layer of the language model inside the real LlavaForConditionalGeneration
see exactly the inputs the quantized matmuls see at inference, image positions included, with
the calibration samples GPTQ uses (quantize/gptq_calibration.py: same data, seed, chat format).

What is collected is what llama-imatrix collects: per weight matrix, the sum over tokens of the
squared input of each input channel, and the token count. It is written in llama.cpp's GGUF
imatrix format (tensors ``<gguf name>.in_sum2`` and ``<gguf name>.counts``, keys
``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``), which llama-quantize
--imatrix reads (common/imatrix-loader.cpp) and divides back to the mean squared activation.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from allava.fileio import atomic_path
from allava.fileio import file_sha256 as sha256
from quantize.gptq_calibration import CalibrationError, CalibrationSpec, build_samples

# HF module path (inside the language model) -> llama.cpp phi2 tensor base name
_BLOCK_MODULES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                  "self_attn.dense": "attn_output", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}
_BLOCK_RE = re.compile(r"language_model\.(?:model\.)?layers\.(\d+)\.(.+)$")


def gguf_weight_name(module_name: str) -> str | None:
    """The GGUF name of the weight a LlavaForConditionalGeneration (Phi) linear module holds, or None
    for modules outside the language model (vision tower, projector)."""
    if module_name.endswith("lm_head"):
        return "output.weight"
    m = _BLOCK_RE.search(module_name)
    if m and m.group(2) in _BLOCK_MODULES:
        return f"blk.{m.group(1)}.{_BLOCK_MODULES[m.group(2)]}.weight"
    return None


def imatrix_filename(spec: CalibrationSpec) -> str:
    """``imatrix-<kind>-s<seed>-n<N>.gguf``: the file's name says how it was calibrated."""
    return f"imatrix-{spec.describe()['kind']}-s{spec.seed}-n{spec.n_samples}.gguf"


def collect(checkpoint: Path, spec: CalibrationSpec, progress: bool = True) -> tuple[dict[str, Any], int, int]:
    """Run the calibration samples through the model; returns ({gguf name: (sum of x^2, count)},
    number of samples, tokens seen)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from allava.hardware import cpu_has_native_bf16

    processor = AutoProcessor.from_pretrained(checkpoint)
    samples = build_samples(spec, processor)
    # the stored dtype (bf16 for ALLaVA-3B: half the memory of fp32) where the hardware computes in it, float32 on
    # CPUs that only emulate bf16 (allava/hardware.py: 209 s per full-size sample in emulated bf16); the sums are
    # taken in float64
    native = torch.cuda.is_available() or cpu_has_native_bf16()
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint, dtype="auto" if native else torch.float32).eval()
    stats: dict[str, list[Any]] = {}
    hooks = []

    def hook(name: str):
        def fn(_mod: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            entry = stats.setdefault(name, [torch.zeros(x.shape[-1], dtype=torch.float64), 0])
            entry[0] += (x * x).sum(0)
            entry[1] += x.shape[0]
        return fn

    for mname, mod in model.named_modules():
        gname = gguf_weight_name(mname)
        if gname is not None and isinstance(mod, torch.nn.Linear):
            hooks.append(mod.register_forward_pre_hook(hook(gname)))
    if not hooks:
        raise CalibrationError(f"{checkpoint}: no language-model linear layers found to calibrate")
    tokens = 0
    with torch.inference_mode():
        for s in tqdm(samples, desc="imatrix", unit="sample", disable=not progress):
            model(**s)
            tokens += int(s["input_ids"].shape[1])
    for h in hooks:
        h.remove()
    return stats, len(samples), tokens


def write_imatrix(path: Path, stats: dict[str, Any], dataset: str, n_chunks: int, chunk_size: int) -> None:
    """Write llama.cpp's GGUF imatrix file (atomically: a crash leaves no half file under ``path``)."""
    import gguf
    import numpy as np

    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch="imatrix")
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", [dataset])
        w.add_uint32("imatrix.chunk_count", n_chunks)
        w.add_uint32("imatrix.chunk_size", chunk_size)
        for name in sorted(stats):
            sums, count = stats[name]
            w.add_tensor(f"{name}.in_sum2", sums.numpy().astype(np.float32))
            w.add_tensor(f"{name}.counts", np.array([count], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def read_imatrix(path: Path) -> dict[str, Any]:
    """Entries and metadata of a GGUF imatrix file (what the tests and the manifest check)."""
    import gguf

    r = gguf.GGUFReader(path)
    names = sorted(t.name.removesuffix(".in_sum2") for t in r.tensors if t.name.endswith(".in_sum2"))
    return {"entries": names, "chunk_count": int(r.fields["imatrix.chunk_count"].contents()),
            "datasets": r.fields["imatrix.datasets"].contents()}


def make_imatrix(checkpoint: Path, spec: CalibrationSpec, outdir: Path, progress: bool = True) -> tuple[Path, dict]:
    """The imatrix file for ``spec`` in ``outdir`` (reused when one of the same name and data exists);
    returns (file, the manifest's calibration record)."""
    if not spec.data.is_file():
        raise CalibrationError(f"{spec.data}: calibration data not found (expected an ALLaVA-4V JSON file)")
    out = outdir / imatrix_filename(spec)
    record = dict(spec.describe())
    record.pop("max_tokens", None)
    if spec.text_only:
        record.pop("image_root", None)
    t0 = time.time()
    if not out.is_file() or read_imatrix(out)["datasets"] != str(spec.data.resolve()):
        stats, n, tokens = collect(Path(checkpoint), spec, progress)
        write_imatrix(out, stats, str(spec.data.resolve()), n, max(1, tokens // max(1, n)))
        record["tokens"] = tokens
        record["compute_s"] = round(time.time() - t0, 1)
        print(f"imatrix: {len(stats)} matrices, {n} {record['kind']} samples, {tokens} tokens "
              f"({time.time() - t0:.1f} s) -> {out}", flush=True)
    record.update(file=out.name, sha256=sha256(out))
    return out, record
