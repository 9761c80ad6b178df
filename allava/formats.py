"""The format table: every export format the toolkit knows, in one place.

Why one table: the quantizer, the runtime registry, the bench (which variants to build, how to
build them, what they should cost in memory) and the report all need the same facts about a
format. Kept here, adding a format is one entry (plus its exporter, runtime and a device-profile
line), and nothing else changes. An entry names the stage programs and the runtime class by module
path, so the core package never imports a stage.

Plug-ins: a module outside this repository can add entries with :func:`register`; it is loaded in
every process (the bench's workers included) when named in ``ALLAVA_FORMATS`` (comma-separated
module names) or declared under the ``allava_edge.formats`` entry-point group of an installed
package.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

PLUGIN_ENV = "ALLAVA_FORMATS"
ENTRY_POINT_GROUP = "allava_edge.formats"
REFERENCE = "pytorch"  # the format every parity and accuracy delta is measured against


class UnknownFormatError(KeyError):
    """A format or precision name the table does not hold; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


@dataclass(frozen=True)
class Precision:
    """One precision of a format.

    ``bits_per_weight`` is the language model's average storage per weight (scales included, as
    llama.cpp and GPTQ quote it); ``vision_bits`` what the vision tower and projector are kept at.
    Both serve estimates only (memory budget before building, sizes in the report); measured sizes
    come from the manifest once the variant exists."""

    name: str  # as manifests and reports spell it, e.g. "Q4_K_M"
    bits_per_weight: float
    made_by: tuple[str, ...]  # stages that write it: "export", "quantize"; the first is what the bench runs
    vision_bits: float = 16.0
    # llama.cpp refuses to write it without an importance matrix (llama-quant.cpp tensor_requires_imatrix)
    needs_imatrix: bool = False

    @property
    def cli(self) -> str:
        """The value the stage commands take (``--outtype f16``, ``--types q4_k_m``)."""
        return self.name.lower()

    def estimate_bytes(self, lm_params: int, other_params: int) -> int:
        return int(lm_params * self.bits_per_weight / 8 + other_params * self.vision_bits / 8)


@dataclass(frozen=True)
class StageCommand:
    """A stage program, run as ``python -m MODULE ARGS``; ARGS may hold {checkpoint}, {outdir},
    {precision} (one precision's cli value), {name} (its table name) and {precisions} (comma-separated
    cli values). A quantize command that takes {precision} runs once per precision."""

    module: str
    args: tuple[str, ...]

    def argv(self, **values: str) -> list[str]:
        return [sys.executable, "-m", self.module, *(a.format(**values) for a in self.args)]

    @property
    def per_precision(self) -> bool:
        return any("{precision}" in a or "{name}" in a for a in self.args)


@dataclass(frozen=True)
class HostNeed:
    """Something a host must have to run a format: the report prints "needs <what>" when unmet."""

    what: str
    met: Callable[[], bool]


def needs_module(module: str, what: str) -> HostNeed:
    return HostNeed(what, lambda: importlib.util.find_spec(module) is not None)


def needs_platform(platform: str, what: str) -> HostNeed:
    return HostNeed(what, lambda: sys.platform == platform)


@dataclass(frozen=True)
class Format:
    name: str  # the manifest's "format"
    runtime: str  # "module:Class" implementing runtimes.base.Runtime
    precisions: tuple[Precision, ...]
    folder: str = ""  # sub-folder of an export folder the stage commands write into
    export: StageCommand | None = None
    quantize: StageCommand | None = None
    quantize_source: str | None = None  # the export precision the bench builds for the quantizer to read
    # (None: the quantizer reads the checkpoint itself, as GPTQ does)
    # added to the quantize command when the bench builds from random weights (latency and size only):
    # options that make a data-driven quantizer cheap where its data cannot matter
    random_weights_args: tuple[str, ...] = ()
    host_needs: tuple[HostNeed, ...] = ()
    # a runtime ("module:Class") that computes this format's outputs from its files where the engine
    # itself cannot run (CoreML on Linux): parity and accuracy come from it, latency never does
    stand_in: str = ""
    stand_in_needs: tuple[HostNeed, ...] = ()
    runs_with: str = ""  # the engine, for people: "llama.cpp (llama-cpp-python)"
    libraries: tuple[str, ...] = ()  # distributions whose versions a benchmark report records
    description: str = ""

    def precision(self, name: str) -> Precision:
        for p in self.precisions:
            if p.name.lower() == name.lower():
                return p
        raise UnknownFormatError(f"format {self.name!r} has no precision {name!r}; "
                                 f"known: {', '.join(p.name for p in self.precisions)}")

    def made_by(self, stage: str) -> list[Precision]:
        """Precisions the stage ("export" or "quantize") can write: its CLI's choices."""
        return [p for p in self.precisions if stage in p.made_by]

    def unmet_needs(self) -> list[str]:
        return [n.what for n in self.host_needs if not n.met()]

    def not_runnable_reason(self) -> str | None:
        """None when this host can run the format, else "not runnable here: needs X, Y"."""
        unmet = self.unmet_needs()
        return f"not runnable here: needs {', '.join(unmet)}" if unmet else None

    def runtime_class(self) -> type:
        mod, cls = self.runtime.split(":")
        return getattr(importlib.import_module(mod), cls)

    def stand_in_available(self) -> bool:
        """Whether this host should use the stand-in: the engine cannot run here, the stand-in can."""
        return bool(self.stand_in) and bool(self.not_runnable_reason()) and all(n.met() for n in self.stand_in_needs)

    def stand_in_class(self) -> type | None:
        """The stand-in runtime class when ``stand_in_available``, else None."""
        if not self.stand_in_available():
            return None
        mod, cls = self.stand_in.split(":")
        return getattr(importlib.import_module(mod), cls)


_TABLE: dict[str, Format] = {}
_plugins_loaded = False


def register(fmt: Format) -> Format:
    """Add (or replace) a table entry; returns it so a plug-in can keep a handle."""
    _TABLE[fmt.name] = fmt
    return fmt


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        importlib.import_module(name)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def all_formats() -> list[Format]:
    _load_plugins()
    return list(_TABLE.values())


def get_format(name: str) -> Format:
    _load_plugins()
    if name not in _TABLE:
        raise UnknownFormatError(f"unknown format {name!r}; known: {', '.join(sorted(_TABLE))}")
    return _TABLE[name]


# -- the built-in entries ------------------------------------------------------------------------

register(Format(
    name=REFERENCE,
    runtime="runtimes.torch_runtime:TorchRuntime",
    precisions=(Precision("FP32", 32.0, (), vision_bits=32.0),),
    host_needs=(needs_module("torch", "PyTorch"),),
    runs_with="transformers LlavaForConditionalGeneration",
    libraries=("torch", "transformers"),
    description="the Hugging Face model folder itself; the reference of every parity and accuracy delta",
))

GGUF_VISION_SUFFIX = "-V"  # "Q4_K_M-VQ8_0": language model Q4_K_M, mmproj Q8_0 (allava.formats.split_gguf_precision)
_GGUF_QUANT_BITS = {  # llama.cpp's quoted average bits per weight for each mix (language model)
    "Q6_K": 6.56, "Q5_K_M": 5.69, "Q5_K_S": 5.54, "Q5_0": 5.5, "Q5_1": 6.0, "Q4_K_M": 4.9, "Q4_K_S": 4.58,
    "Q4_0": 4.5, "Q4_1": 5.0, "Q3_K_M": 3.91, "Q2_K": 2.96,
}
# the low-bit mixes a phone-sized model may want; best made with an importance matrix
# (quantize/gguf_imatrix.py: --imatrix auto), and required by llama.cpp for the ones flagged True
_GGUF_LOW_BIT = {  # name: (llama.cpp's quoted bits per weight, needs an imatrix)
    "Q3_K_S": (3.41, False), "IQ4_XS": (4.25, False), "IQ4_NL": (4.5, False), "IQ3_M": (3.66, False),
    "IQ3_XXS": (3.06, True), "IQ2_M": (2.7, True),
}


def split_gguf_precision(name: str) -> tuple[str, str | None]:
    """"Q4_K_M-VQ8_0" -> ("Q4_K_M", "Q8_0"); "Q4_K_M" -> ("Q4_K_M", None): the language model's type and
    the projector's when the precision names one."""
    lm, sep, vision = name.upper().partition(GGUF_VISION_SUFFIX)
    return lm, (vision if sep else None)


register(Format(
    name="gguf",
    runtime="runtimes.llamacpp_runtime:LlamaCppRuntime",
    precisions=(
        Precision("F32", 32.0, ("export",), vision_bits=32.0),
        Precision("F16", 16.0, ("export",)),
        Precision("BF16", 16.0, ("export",)),
        Precision("Q8_0", 8.5, ("quantize", "export")),  # llama.cpp's quantizer; the writer can too
        *(Precision(name, bits, ("quantize",)) for name, bits in _GGUF_QUANT_BITS.items()),
        *(Precision(name, bits, ("quantize",), needs_imatrix=need) for name, (bits, need) in _GGUF_LOW_BIT.items()),
        # the language model at NAME with the vision projector (CLIP + MLP, mmproj) at Q8_0 instead of F16:
        # CLIP's matmuls then run llama.cpp's int8 kernels (image encode ~2-3x faster, half the mmproj bytes)
        *(Precision(f"{name}{GGUF_VISION_SUFFIX}Q8_0", bits, ("quantize",), vision_bits=8.5)
          for name, bits in (("Q8_0", 8.5), ("Q4_K_M", 4.9), ("Q4_0", 4.5))),
    ),
    folder="gguf",
    export=StageCommand("export.to_gguf", ("{checkpoint}", "--outdir", "{outdir}", "--outtype", "{precision}")),
    quantize=StageCommand("quantize.gguf_quantizer", ("--types", "{precisions}", "--export", "{outdir}")),
    quantize_source="F16",
    host_needs=(needs_module("llama_cpp", "llama-cpp-python (scripts/build_llama_cpp.sh)"),),
    runs_with="llama.cpp (libllama + libmtmd through llama-cpp-python, patched)",
    libraries=("llama-cpp-python", "gguf"),
    description="language model (phi2) + vision projector (clip mmproj), the files llama-mtmd-cli takes",
))

register(Format(
    name="onnx",
    runtime="runtimes.onnx_runtime:OnnxRuntime",
    precisions=(
        Precision("FP32", 32.0, ("export",), vision_bits=32.0),
        Precision("FP16", 16.0, ("export",)),
        Precision("INT8", 8.0, ("quantize",), vision_bits=8.0),  # dynamic int8, per-channel scales
        Precision("Q4", 4.5, ("quantize",), vision_bits=4.5),  # MatMulNBits, 4 bits + a scale per 32 weights
        Precision("Q4F16", 4.5, ("quantize",), vision_bits=4.5),
    ),
    folder="onnx",
    export=StageCommand("export.to_onnx", ("{checkpoint}", "--outdir", "{outdir}", "--dtypes", "{precision}")),
    quantize=StageCommand("quantize.onnx_quantizer", ("--types", "{precisions}", "--export", "{outdir}")),
    quantize_source="FP32",
    host_needs=(needs_module("onnxruntime", "onnxruntime (pip install 'allava-edge[onnx]')"),),
    runs_with="ONNX Runtime (CPU); the same folder runs in transformers.js",
    libraries=("onnxruntime", "onnx"),
    description="three graphs (vision encoder, token embedding, decoder with KV cache) in the transformers.js layout",
))

register(Format(
    name="gptq",
    runtime="runtimes.gptq_runtime:GptqRuntime",
    precisions=(  # bits + an fp16 scale and a packed zero point per group of 128 weights
        Precision("W4G128", 4.16, ("quantize",)),
        Precision("W8G128", 8.16, ("quantize",)),
    ),
    folder="gptq",
    quantize=StageCommand("quantize.gptq_quantizer", ("{checkpoint}", "--outdir", "{outdir}/{name}",
                                                      "--precision", "{precision}")),
    random_weights_args=("--n-samples", "8"),  # full size: ~30 min on 2 cores instead of hours
    host_needs=(needs_module("gptqmodel", "gptqmodel (pip install 'allava-edge[gptq]')"),
                needs_module("optimum", "optimum (pip install 'allava-edge[gptq]')")),
    runs_with="transformers + GPTQModel kernels (the same folder loads in vLLM and SGLang)",
    libraries=("gptqmodel", "optimum", "transformers", "torch"),
    description="a transformers model folder whose language model is GPTQ-quantized (v1 format), vision in fp16",
))

register(Format(
    name="coreml",
    runtime="runtimes.coreml_runtime:CoreMLRuntime",
    precisions=(
        Precision("FP16", 16.0, ("export",)),
        Precision("INT8", 8.5, ("export",), vision_bits=8.5),  # + an fp16 scale per 32 weights (as Q8_0)
        Precision("INT4", 4.5, ("export",), vision_bits=4.5),  # + an fp16 scale per 32 weights
        Precision("PALETTE4", 4.1, ("export",), vision_bits=4.1),  # 4-bit indices + a 16-entry table per 16 channels
    ),
    folder="coreml",
    export=StageCommand("export.to_coreml", ("{checkpoint}", "--outdir", "{outdir}/{name}", "--precision", "{precision}")),
    host_needs=(needs_platform("darwin", "macOS"),
                needs_module("coremltools", "coremltools (pip install 'allava-edge[coreml]')")),
    stand_in="runtimes.coreml_runtime:CoreMLReferenceRuntime",
    stand_in_needs=(needs_module("coremltools", "coremltools (pip install 'allava-edge[coreml]')"),),
    runs_with="CoreML (iOS 18 / macOS 15 ML programs, stateful KV cache); elsewhere the reference MIL evaluator",
    libraries=("coremltools",),
    description="vision, token-embedding and stateful language-model ML program packages (.mlpackage)",
))
