"""ONNX quantization with ONNX Runtime's own quantizers, written beside the fp32 graphs.

  python quantize/run.py --format onnx --types int8,q4,q4f16 --export outputs/exports/onnx [--block-size 32]

--export is a folder written by export/to_onnx.py. Per type, all three graphs get the
transformers.js suffix (so `dtype: "q4"` in transformers.js finds them) and a variant manifest:
  int8   `_quantized`: onnxruntime.quantization.quantize_dynamic, signed 8-bit weights with one scale per
         output channel, activations quantized at run time; MatMul/Gemm only, so CLIP's patch-embedding
         Conv and the token-embedding Gather stay float32.
  q4     `_q4`: MatMulNBitsQuantizer, 4-bit symmetric weights with one scale per --block-size weights,
         weight-only; accuracy_level 4 (activations in int8 inside the kernel: the fastest MatMulNBits
         path on CPUs with VNNI/AVX512, the one ONNX Runtime recommends for CPU).
  q4f16  `_q4f16`: q4, then the rest of the graph in float16 (as export/to_onnx.py's fp16: softmax and
         norms in float32; inputs and outputs float32).
Every decoder gets the lean interface (allava/onnx_decoder_io.py): a num_logits_to_keep input (transformers.js
feeds 1 while generating: one row of logits, not ~620) and a float16 KV cache (--kv-cache, default float16:
past/present in float16 between steps, half the cache memory; docs/memory.md).
The token table (embed_tokens, a Gather that no weight quantizer touches) of q4 is written as
--embed-table says: int8 (default; one float32 scale per row, dequantized by Cast and Mul after the
Gather: 51,200 x 2,560 is 125 MiB instead of 500 MiB at the ALLaVA-3B shape, docs/memory.md),
float16 (a Cast after the Gather), or float32 (as exported). Standard ONNX ops only, so
transformers.js's `dtype: "q4"` still loads it; its output stays float32.
q4 and q4f16 graphs keep their weights in an external {file}_data file at any size: ONNX Runtime
then reads each weight into its own buffer, where an inline graph is parsed as one protobuf whose
copy stays beside the prepacked weights (measured at the ALLaVA-3B shape: the q4 decoder session
2,826 MiB inline, 1,927 MiB external; docs/memory.md). config.json's transformers.js_config names every
graph with external data (use_external_data_format), so transformers.js fetches the _data files.
Each file is written to a temporary name, checked with onnx.checker and opened in a session, then renamed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from allava.cli import exit_code
from allava.fileio import staging_folder
from allava.formats import get_format
from allava.onnx_decoder_io import KV_DTYPES, DecoderIOError, lean_decoder
from allava.onnx_layout import (
    FORMAT,
    GRAPHS,
    GraphError,
    describe_variant,
    external_tensors,
    graph_files,
    graph_path,
    save_graph,
    to_fp16,
    validate_graph,
    variant_dir,
)
from allava.variant import MANIFEST, Manifest, ManifestError, human_size

TYPES = {p.cli: p.name for p in get_format(FORMAT).made_by("quantize")}
SOURCE = get_format(FORMAT).quantize_source or "FP32"
ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations in the kernel (ONNX Runtime's fastest CPU setting)
EMBED_TABLES = ("int8", "float16", "float32")
EXTERNAL_ALWAYS = ("Q4", "Q4F16")  # precisions whose graphs always keep their weights in {file}_data


class QuantizeError(RuntimeError):
    """The export cannot be quantized; the message says which file and why."""


def _source(root: Path) -> Manifest:
    try:
        man = Manifest.read(root / "variants" / SOURCE)
    except (FileNotFoundError, ManifestError) as exc:
        raise QuantizeError(f"{root}: no {SOURCE} ONNX variant to quantize ({exc}); run export/to_onnx.py first") from exc
    if man.format != FORMAT:
        raise QuantizeError(f"{root}: the {SOURCE} manifest is format {man.format!r}, not {FORMAT}")
    return man


def _infer_shapes(model: Any) -> Any:
    """Shape inference on the graph in memory: its external weights are not loaded, so this is small."""
    import onnx
    from onnxruntime.quantization.quant_utils import add_infer_metadata

    inferred = onnx.shape_inference.infer_shapes(model)
    add_infer_metadata(inferred)
    return inferred


def load_lazily(path: Path) -> Any:
    """The graph with shapes inferred and its external weights left on disk, so ONNX Runtime's
    quantizers read one weight at a time (inside ``reading_beside(path)``)."""
    import onnx

    return _infer_shapes(onnx.load(str(path), load_external_data=False))


@contextmanager
def lean_shape_inference() -> Iterator[None]:
    """ONNX Runtime's dynamic quantizer re-infers shapes by deep-copying the model, saving it with its
    weights to a temporary folder and loading it back (onnx_quantizer.ONNXQuantizer.__init__): two more
    copies of a 10.6 GB decoder, over 24 GB in all (killed, measured). Inside this block it infers them
    on the graph in memory instead, which gives the same value_info. tests/export/test_onnx_export.py
    quantizes graphs with external weights, so a change in ONNX Runtime shows up there."""
    from unittest import mock

    from onnxruntime.quantization import base_quantizer, onnx_quantizer

    with mock.patch.object(onnx_quantizer, "save_and_reload_model_with_shape_infer", _infer_shapes), \
            mock.patch.object(base_quantizer, "save_and_reload_model_with_shape_infer", _infer_shapes):
        yield


@contextmanager
def reading_beside(path: Path) -> Iterator[None]:
    """Run with the graph's folder as the current folder: the quantizers read an external weight
    through onnx.numpy_helper.to_array without a base folder, and onnx resolves its (relative, as
    onnx requires) location against the current folder."""
    old = Path.cwd()
    os.chdir(path.parent)
    try:
        yield
    finally:
        os.chdir(old)


def materialize(model: Any, folder: Path) -> Any:
    """Read the external weights still on disk (those no quantizer touched) into the model."""
    from onnx.external_data_helper import load_external_data_for_tensor

    for t in external_tensors(model):
        load_external_data_for_tensor(t, str(folder))
        del t.external_data[:]
        t.data_location = 0  # TensorProto.DEFAULT
    return model


def _int8(src: Path):
    """quantize_dynamic's steps (ONNXQuantizer, integer ops, per-channel int8 weights, MatMul weights
    constant only) on a lazily loaded graph, without the whole-model copies (lean_shape_inference)."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.quant_utils import QuantizationMode

    with reading_beside(src), lean_shape_inference():
        q = ONNXQuantizer(load_lazily(src), True, False, QuantizationMode.IntegerOps, False, QuantType.QInt8,
                          QuantType.QUInt8, None, None, None, ["MatMul", "Gemm"], {"MatMulConstBOnly": True})
        q.quantize_model()
    return materialize(q.model.model, src.parent)


def _q4(src: Path, block_size: int, half: bool):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(load_lazily(src), bits=4, block_size=block_size, is_symmetric=True,
                             accuracy_level=ACCURACY_LEVEL)
    with reading_beside(src):
        q.process()
    model = materialize(q.model.model, src.parent)
    return to_fp16(model) if half else model


def small_token_table(model: Any, table: str) -> Any:
    """The embed_tokens graph (one Gather of a float32 [vocab, hidden] table) with the table stored as
    ``table``: int8 with one symmetric float32 scale per row (Gather the rows and their scales, Cast,
    Mul), or float16 (Gather, Cast). The output stays float32, so runtimes and transformers.js see the
    same graph interface. Why: ONNX Runtime keeps the whole float32 table resident (500 MiB at the
    ALLaVA-3B shape), the largest block after the decoder's weights in a Q4 run."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if table == "float32":
        return model
    (node,) = model.graph.node
    if node.op_type != "Gather" or len(model.graph.initializer) != 1:
        raise QuantizeError(f"embed_tokens: expected one Gather of one table, found {[n.op_type for n in model.graph.node]}")
    (init,) = model.graph.initializer
    weight = numpy_helper.to_array(init).astype(np.float32)
    ids, out = node.input[1], node.output[0]
    name = init.name
    if table == "float16":
        inits = [numpy_helper.from_array(weight.astype(np.float16), name)]
        nodes = [helper.make_node("Gather", [name, ids], [out + "_f16"]),
                 helper.make_node("Cast", [out + "_f16"], [out], to=TensorProto.FLOAT)]
    elif table == "int8":
        scale = np.abs(weight).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        inits = [numpy_helper.from_array(q, name + "_int8"), numpy_helper.from_array(scale.astype(np.float32), name + "_scale")]
        nodes = [helper.make_node("Gather", [name + "_int8", ids], [out + "_q"]),
                 helper.make_node("Gather", [name + "_scale", ids], [out + "_scale"]),
                 helper.make_node("Cast", [out + "_q"], [out + "_f"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", [out + "_f", out + "_scale"], [out])]
    else:
        raise QuantizeError(f"unknown --embed-table {table!r}; choose from {', '.join(EMBED_TABLES)}")
    graph = helper.make_graph(nodes, model.graph.name, list(model.graph.input), list(model.graph.output), inits)
    new = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="allava quantize/run.py")
    new.ir_version = model.ir_version
    onnx.checker.check_model(new)
    return new


def quantize_graph(root: Path, graph: str, precision: str, block_size: int, stage: Path,
                   embed_table: str = "float32", kv_cache: str = "float32") -> None:
    """One graph of one precision, made from the fp32 graph into the staging folder and validated there.
    The decoder gets the lean interface (num_logits_to_keep, the KV cache in ``kv_cache``) whether or not
    the fp32 export it comes from has it (allava/onnx_decoder_io.py)."""
    import onnx

    src, dst = graph_path(root, graph, SOURCE), graph_path(root, graph, precision)
    if graph == "embed_tokens" and precision == "INT8":
        model = onnx.load(str(src))  # a Gather: dynamic quantization would leave it float32 anyway
    elif graph == "embed_tokens" and precision == "Q4":
        model = small_token_table(onnx.load(str(src)), embed_table)  # MatMulNBits would leave it float32
    elif precision == "INT8":
        model = _int8(src)
    else:
        model = _q4(src, block_size, half=precision == "Q4F16")
    if graph == "decoder_model_merged":
        try:
            model = lean_decoder(model, kv_cache)
        except DecoderIOError as exc:
            raise QuantizeError(f"{src}: {exc}") from exc
    save_graph(model, stage / dst.name, external=True if precision in EXTERNAL_ALWAYS else None)
    del model
    validate_graph(stage / dst.name)


def note_external_data(root: Path, precision: str) -> None:
    """Record in config.json which of this precision's graphs have external data: transformers.js
    looks a graph's file name up in transformers.js_config.use_external_data_format and fetches no
    {file}_data unless it is listed there."""
    import json

    from allava.fileio import atomic_path

    path = root / "config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text())
    flags = cfg.setdefault("transformers.js_config", {}).setdefault("use_external_data_format", {})
    for graph in GRAPHS:
        name = graph_path(root, graph, precision).name
        if len(graph_files(root, graph, precision)) > 1:
            flags[name] = True
        else:
            flags.pop(name, None)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")


def quantize_onnx(export: str | Path, qtype: str, block_size: int = 32, embed_table: str = "int8",
                  kv_cache: str = "float16") -> Path:
    """Make one quantized precision of an ONNX export; returns its variant folder.

    All graphs are made and validated in one staging folder before any is moved into place, so a
    failure (a full disk included) leaves the export as it was: no precision with some graphs new
    and some old or missing."""
    precision = TYPES.get(qtype.lower())
    if precision is None:
        raise QuantizeError(f"unknown ONNX type {qtype!r}; choose from {', '.join(TYPES)}")
    if embed_table not in EMBED_TABLES:
        raise QuantizeError(f"unknown --embed-table {embed_table!r}; choose from {', '.join(EMBED_TABLES)}")
    if kv_cache not in KV_DTYPES:
        raise QuantizeError(f"unknown --kv-cache {kv_cache!r}; choose from {', '.join(KV_DTYPES)}")
    root = Path(export).resolve()  # the quantizers run from the graphs' folder (reading_beside)
    src = _source(root)
    t0 = time.time()
    onnx_dir = graph_path(root, GRAPHS[0], precision).parent
    bits = get_format(FORMAT).precision(precision).bits_per_weight
    needed = int(src.total_bytes * bits / 32)  # from the fp32 graphs, at this precision's bits per weight
    with staging_folder(variant_dir(root, precision), needed) as stage:
        for graph in GRAPHS:
            quantize_graph(root, graph, precision, block_size, stage, embed_table, kv_cache)
        (variant_dir(root, precision) / MANIFEST).unlink(missing_ok=True)  # no manifest over a mix of graphs
        for graph in GRAPHS:
            for old in graph_files(root, graph, precision):
                old.unlink(missing_ok=True)  # a re-run replaces the old files: no stale external data may linger
        for f in sorted(stage.iterdir(), key=lambda f: not f.name.endswith("_data")):  # external data first
            os.replace(f, onnx_dir / f.name)
    note_external_data(root, precision)
    man = describe_variant(root, precision, src.source, "quantize/run.py (onnxruntime.quantization)",
                           quantized_from={"precision": SOURCE}, block_size=block_size if precision != "INT8" else None,
                           accuracy_level=ACCURACY_LEVEL if precision != "INT8" else None,
                           embed_table=embed_table if precision == "Q4" else None, kv_cache=kv_cache)
    print(f"  {precision:<6} {human_size(man.total_bytes):>12}  decoder {human_size(man.lm_bytes):>12}  "
          f"({time.time() - t0:.1f} s)  -> {root / 'variants' / precision}", flush=True)
    return variant_dir(root, precision)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python quantize/run.py --format onnx", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", required=True, help=f"comma-separated: {', '.join(TYPES)}")
    ap.add_argument("--export", required=True, type=Path, help="an ONNX export folder (export/to_onnx.py)")
    ap.add_argument("--block-size", type=int, default=32, choices=[16, 32, 64, 128, 256],
                    help="weights per 4-bit scale for q4/q4f16 (default 32)")
    ap.add_argument("--embed-table", default="int8", choices=EMBED_TABLES,
                    help="how q4 stores the token table: int8 + a scale per row (default), float16, float32")
    ap.add_argument("--kv-cache", default="float16", choices=KV_DTYPES,
                    help="dtype of the decoder's past/present keys and values between steps (default float16: "
                         "half the cache memory; float32 as exported)")
    a = ap.parse_args(argv)

    def run() -> None:
        print(f"source {a.export} ({SOURCE}, {human_size(_source(a.export).total_bytes)})")
        for t in (t.strip() for t in a.types.split(",") if t.strip()):
            quantize_onnx(a.export, t, a.block_size, a.embed_table, a.kv_cache)

    return exit_code(run, QuantizeError, GraphError)


if __name__ == "__main__":
    sys.exit(main())
