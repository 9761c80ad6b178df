"""Convert the wrapper programs (export/coreml_wrappers.py) to ML program packages, and compress them.

Why ``torch.jit.trace`` + ``ct.convert``: it is coremltools' documented stateful path (buffers
written in place become ``ct.StateType`` states, iOS 18 programs), and with torch 2.13 it converts
the wrappers without the decomposition step torch.export needs. Flexible query and key lengths
(``ct.RangeDim``) let one language program serve prefill and decode.

Precision: programs compute in fp16 (CoreML's default, what the Neural Engine runs) except the
attention score matmuls and softmax, kept in fp32 because Phi-2's attention overflows fp16
(FORMATS.md). Compressed variants replace the fp16 weights of the large layers with coremltools'
constexpr ops (decompressed at load on the device):

  INT8      int8 in blocks of 32 input weights (as llama.cpp's Q8_0; iOS 18 per-block)
  INT4      int4 in blocks of 32 input weights
            (both per output channel for the CLIP patch convolution: its 3 input channels cannot
            take 32-blocks)
  PALETTE4  a 16-entry lookup table per group of 16 output channels (k-means; needs scikit-learn)

Only linear/conv weights and the token-embedding table are compressed: the rotary tables and
layer norms stay fp16 (a 4-bit rotary table would move every position).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from allava import __version__ as TOOLKIT_VERSION
from allava.coreml_layout import EMBED_PACKAGE, STATES, VISION_PACKAGE, lm_input_name, lm_output_name, lm_package
from export.coreml_wrappers import EmbedProgram, LanguageModelChunk, VisionProgram, chunk_bounds

logging.getLogger("coremltools").setLevel(logging.ERROR)  # its import logs every macOS-only proxy it lacks
KEEP_FP32_OPS = ("matmul", "softmax")  # attention scores and probabilities (Phi-2 overflows fp16)
PRECISIONS = ("FP16", "INT8", "INT4", "PALETTE4")


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """coremltools prints tqdm bars per pass and version warnings; keep them off the user's terminal."""
    if not enabled:
        yield
        return
    import warnings

    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def coremltools():  # noqa: ANN201 - the module
    """Import coremltools with its import-time chatter silenced (it logs each macOS-only proxy it lacks)."""
    with quiet():
        import coremltools as ct
    return ct


@contextlib.contextmanager
def in_float32(*modules: torch.nn.Module) -> Iterator[None]:
    """Trace in float32 whatever the stored dtype, one program's modules at a time: a bf16 full-size
    checkpoint then never holds more than one chunk in float32 (the upcast is lossless and undone)."""
    dtypes = [next(m.parameters()).dtype for m in modules]
    for m in modules:
        m.float()
    try:
        yield
    finally:
        for m, d in zip(modules, dtypes, strict=True):
            m.to(d)


def _fp16_selector(op: Any) -> bool:
    return op.op_type not in KEEP_FP32_OPS


def _convert(traced: torch.jit.ScriptModule, inputs: list, outputs: list, states: list | None = None) -> Any:
    ct = coremltools()
    with quiet():
        return ct.convert(traced, inputs=inputs, outputs=outputs, states=states or None, convert_to="mlprogram",
                          minimum_deployment_target=ct.target.iOS18,
                          compute_precision=ct.transform.FP16ComputePrecision(op_selector=_fp16_selector),
                          skip_model_load=True)


def convert_vision(model: torch.nn.Module, image_size: int) -> Any:
    ct = coremltools()
    # converted inside the float32 context: the traced module shares the model's parameters
    with in_float32(model.model.vision_tower, model.model.multi_modal_projector):
        with torch.no_grad(), quiet():
            traced = torch.jit.trace(VisionProgram(model).eval(), (torch.zeros(1, 3, image_size, image_size),))
        return _convert(traced, [ct.TensorType("pixel_values", shape=(1, 3, image_size, image_size), dtype=np.float16)],
                        [ct.TensorType("image_features", dtype=np.float16)])


def convert_embed(model: torch.nn.Module, max_context: int) -> Any:
    ct = coremltools()
    with in_float32(model.get_input_embeddings()):
        with torch.no_grad(), quiet():
            traced = torch.jit.trace(EmbedProgram(model).eval(), (torch.zeros(1, 3, dtype=torch.int32),))
        length = ct.RangeDim(1, max_context, default=1, symbol="query_length")
        return _convert(traced, [ct.TensorType("input_ids", shape=(1, length), dtype=np.int32)],
                        [ct.TensorType("inputs_embeds", dtype=np.float16)])


def convert_lm_chunk(model: torch.nn.Module, first: int, last: int, index: int, n_chunks: int, max_context: int) -> Any:
    """One stateful chunk; traced with a 3-token query over 5 keys (both flexible in the program)."""
    ct = coremltools()
    lm = model.model.language_model
    parts = [*lm.layers[first:last]] + ([lm.final_layernorm, model.lm_head] if last == len(lm.layers) else [])
    hidden = model.config.text_config.hidden_size
    q = ct.RangeDim(1, max_context, default=1, symbol="query_length")
    end = ct.RangeDim(1, max_context, default=1, symbol="end_step")
    with in_float32(*parts):
        with torch.no_grad(), quiet():
            chunk = LanguageModelChunk(model, first, last, max_context).eval()
            traced = torch.jit.trace(chunk, (torch.zeros(1, 3, hidden), torch.zeros(1, 1, 3, 5)))
        states = [ct.StateType(ct.TensorType(shape=tuple(getattr(chunk, s).shape), dtype=np.float16), name=s) for s in STATES]
        ml = _convert(traced, [ct.TensorType(lm_input_name(index), shape=(1, q, hidden), dtype=np.float16),
                               ct.TensorType("causal_mask", shape=(1, 1, q, end), dtype=np.float16)],
                      [ct.TensorType(lm_output_name(index, n_chunks), dtype=np.float16)], states)
    del traced, chunk
    return ml


def _weight_consts(program: Any, package: str) -> list[str]:
    """Names of the const ops holding the weights to compress: linear/conv weights, or the token table.

    Named one by one (coremltools' op_name_configs) rather than by consumer op type: the converter
    shares identical constants between ops (a zero bias feeds a layer norm and a linear), and a
    type-based config would then conflict; naming also keeps rotary tables and norms in fp16."""
    wanted = {"gather": "x"} if package == EMBED_PACKAGE else {"linear": "weight", "conv": "weight"}
    names = []
    for op in program.functions["main"].operations:
        var = op.inputs.get(wanted[op.op_type]) if op.op_type in wanted else None
        if var is not None and var.op is not None and var.op.op_type == "const" and var.op.name not in names:
            names.append(var.op.name)
    return names


def _configs(precision: str, ml: Any, package: str) -> tuple[Callable[..., Any], Any] | None:
    """(coremltools compression function, OptimizationConfig) for one package, or None for FP16."""
    if precision == "FP16":
        return None
    from coremltools.optimize import coreml as cto

    if precision == "INT8":  # blocks of 32 as llama.cpp's Q8_0: per-channel int8 flipped 2 of 50 held-out answers
        main = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_block", block_size=32)
        narrow = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        fn = cto.linear_quantize_weights
    elif precision == "INT4":
        main = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32)
        narrow = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_channel")
        fn = cto.linear_quantize_weights
    elif precision == "PALETTE4":
        main = cto.OpPalettizerConfig(mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=16)
        narrow, fn = main, cto.palettize_weights
    else:
        raise ValueError(f"unknown CoreML precision {precision!r}; known: {', '.join(PRECISIONS)}")
    program = _program(ml)
    shapes = {op.name: tuple(op.outputs[0].shape) for op in program.functions["main"].operations if op.op_type == "const"}
    # a weight whose input width is not a multiple of the block (the CLIP patch convolution: 3 channels)
    # takes the per-channel form
    by_name = {n: (main if precision == "PALETTE4" or _blockable(shapes.get(n), package) else narrow)
               for n in _weight_consts(program, package)}
    return fn, cto.OptimizationConfig(op_name_configs=by_name)


def _program(ml: Any) -> Any:
    """The model's MIL program: kept from conversion, or read back from a saved package."""
    if ml._mil_program is not None:
        return ml._mil_program
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    spec = ml.get_spec()
    return load_milproto(spec, specification_version=spec.specificationVersion, file_weights_dir=ml.weights_dir)


def _blockable(shape: tuple[int, ...] | None, package: str) -> bool:
    """Blocks of 32 run along axis 1: a linear's inputs, a conv's input channels, an embedding's width."""
    del package
    return shape is None or len(shape) < 2 or shape[1] % 32 == 0


def compress(ml: Any, precision: str, package: str) -> Any:
    """The package's weights at ``precision`` (the fp16 model itself for FP16)."""
    cfg = _configs(precision, ml, package)
    if cfg is None:
        return ml
    fn, config = cfg
    with quiet():
        return fn(ml, config)


def describe(ml: Any, description: str, inputs: dict[str, str], outputs: dict[str, str], meta: dict[str, str]) -> None:
    """What Xcode's model view shows: author, license, version, descriptions of every input and output."""
    ml.author = "allava-edge export/to_coreml.py"
    ml.license = meta.pop("license", "as the source checkpoint")
    ml.version = TOOLKIT_VERSION
    ml.short_description = description
    for name, text in inputs.items():
        ml.input_description[name] = text
    for name, text in outputs.items():
        ml.output_description[name] = text
    ml.user_defined_metadata.update({k: str(v) for k, v in meta.items()})


def save(ml: Any, path: Path) -> None:
    with quiet():
        ml.save(str(path))


def convert_all(model: torch.nn.Module, stage: Path, precision: str, max_context: int, chunk_layers: int,
                meta: dict[str, str], log: Callable[[str], None] = print) -> list[str]:
    """Convert (and compress) every program into ``stage``; returns the package names in role order
    (vision, embed_tokens, language-model chunks). Each program is converted, saved and freed before
    the next, so peak memory is one program's, not the model's."""
    tc = model.config.text_config
    image_size = model.config.vision_config.image_size
    names = []
    steps: list[tuple[str, Callable[[], Any], str, dict[str, str], dict[str, str]]] = [
        (VISION_PACKAGE, lambda: convert_vision(model, image_size), "CLIP vision tower + projector: image -> LM-space features",
         {"pixel_values": f"RGB image, {image_size}x{image_size}, CLIP-normalised (processor_config.json)"},
         {"image_features": "projected patch features, one row per <image> token (CLS dropped)"}),
        (EMBED_PACKAGE, lambda: convert_embed(model, max_context), "token embedding table",
         {"input_ids": "token ids (tokenizer.json), int32"}, {"inputs_embeds": "embeddings of the ids"}),
    ]
    bounds = chunk_bounds(tc.num_hidden_layers, chunk_layers)
    for i, (a, b) in enumerate(bounds):
        io_in = {lm_input_name(i): "embeddings (image features spliced in at <image> tokens)" if i == 0 else
                 "hidden states from the previous chunk",
                 "causal_mask": f"additive mask [1, 1, T, past+T]: 0 where a query may attend, -1e4 elsewhere; "
                                f"past+T <= {max_context}"}
        io_out = {lm_output_name(i, len(bounds)): "next-token logits per query position" if i == len(bounds) - 1 else
                  "hidden states for the next chunk"}
        steps.append((lm_package(i, len(bounds)), lambda a=a, b=b, i=i: convert_lm_chunk(model, a, b, i, len(bounds), max_context),
                      f"Phi decoder layers {a}-{b - 1} of {tc.num_hidden_layers} with a stateful key/value cache "
                      f"(states key_cache, value_cache; iOS 18)", io_in, io_out))
    for name, build, desc, io_in, io_out in steps:
        t0 = time.perf_counter()
        ml = build()
        t1 = time.perf_counter()
        ml = compress(ml, precision, name)
        describe(ml, desc, io_in, io_out, {**meta, "precision": precision, "program": name})
        save(ml, stage / name)
        del ml
        names.append(name)
        log(f"  {name:<28} converted {t1 - t0:6.1f} s" + (f", {precision} {time.perf_counter() - t1:6.1f} s" if precision != "FP16" else ""))
        sys.stdout.flush()
    return names


def compress_existing(src: Path, dst: Path, package: str, precision: str, meta: dict[str, str]) -> None:
    """A compressed copy of an FP16 package (no reconversion: the fp16 program is the same)."""
    ct = coremltools()
    with quiet():
        ml = ct.models.MLModel(str(src / package), skip_model_load=True)
    ml = compress(ml, precision, package)
    ml.user_defined_metadata.update({**meta, "precision": precision})
    save(ml, dst / package)
