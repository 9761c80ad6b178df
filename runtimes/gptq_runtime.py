"""GPTQ runtime: the quantized transformers folder, loaded with plain ``from_pretrained``.

Why the PyTorch runtime's loop: a GPTQ variant *is* a transformers model whose language-model
linears are GPTQModel's quantized modules (transformers -> optimum -> gptqmodel), so the same
greedy loop, image path and timings apply; only the loading differs (kernel, dtype, device).

The kernel ("backend" in GPTQModel's words) decides the speed. On a CPU the candidates are
GPTQModel's ``gptq_torch_aten`` (torch's packed-int4 matmul, weights repacked once at load),
``gptq_torch_int8`` (weights as int8, int8 matmul), ``gptq_torch_fused`` and ``gptq_torch``
(dequantizes every call). ``bench/experiments/gptq_kernels.py`` measures them on this host; the default order
below is its result on the project's CPUs (docs/experiments.md), and the first kernel that takes the
variant's bits and group size is used. On CUDA GPTQModel's own choice ("auto": Marlin/ExLlama/Triton
when installed) is kept. ``ALLAVA_GPTQ_KERNEL`` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from allava.variant import Manifest
from runtimes.base import VariantError
from runtimes.torch_runtime import TorchRuntime

KERNEL_ENV = "ALLAVA_GPTQ_KERNEL"
# fastest first on the project's CPUs (bench/experiments/gptq_kernels.py); bits each kernel takes
CPU_KERNELS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("gptq_torch_aten", (4,)),  # 4-bit decode 17.9 tok/s (Phi-2 width, 8 layers, 2 threads; dense bf16 8.9)
    ("gptq_torch_fused", (4,)),  # 16.9
    ("gptq_torch_int8", (4, 8)),  # 14.3 at 4 bits; the fastest that takes 8 bits (12.8)
    ("gptq_torch", (2, 3, 4, 8)),  # dequantizes every call: 0.7
)


def choose_kernel(bits: int, on_cuda: bool) -> str:
    if os.environ.get(KERNEL_ENV):
        return os.environ[KERNEL_ENV]
    if on_cuda:
        return "auto"
    for kernel, takes in CPU_KERNELS:
        if bits in takes:
            return kernel
    return "auto"


class GptqRuntime(TorchRuntime):
    format = "gptq"
    default_dtype = "bfloat16"

    def load(self, variant_path: str | Path, threads: int | None = None, dtype: str | None = None) -> GptqRuntime:
        path = Path(variant_path)
        try:
            man = Manifest.read(path)
        except (FileNotFoundError, ValueError) as exc:
            raise VariantError(str(exc)) from exc
        if man.format != self.format:
            raise VariantError(f"{path}: manifest format {man.format!r}, expected {self.format!r}")
        self.bits = int(man.extra.get("bits", 4))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.kernel = choose_kernel(self.bits, self.device.type == "cuda")
        # GPTQ folders load in half precision only; on CPU bfloat16 (the kernels take it; measured in
        # bench/experiments/gptq_kernels.py), on CUDA float16 (what the GPU kernels are written for)
        dtype = dtype or ("float16" if self.device.type == "cuda" else "bfloat16")
        super().load(path, threads, dtype)
        return self

    def _from_pretrained(self) -> torch.nn.Module:
        from transformers import GPTQConfig, LlavaForConditionalGeneration

        qcfg = GPTQConfig(bits=self.bits, backend=self.kernel)
        return LlavaForConditionalGeneration.from_pretrained(self.variant, dtype=self.dtype, device_map=str(self.device),
                                                             quantization_config=qcfg)

    def kernel_class(self) -> str:
        """The quantized linear class actually loaded (what GPTQModel chose for ``self.kernel``)."""
        layer = self.model.model.language_model.layers[0].mlp.fc1
        return type(layer).__name__

    @classmethod
    def build_info(cls) -> dict[str, Any]:
        from importlib import metadata

        info: dict[str, Any] = {"engine": "gptqmodel"}
        for dist in ("gptqmodel", "optimum", "transformers", "torch"):
            try:
                info[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                info[dist] = None
        info["kernel_order_cpu"] = [k for k, _ in CPU_KERNELS]
        info["kernel_override"] = os.environ.get(KERNEL_ENV)
        return info
