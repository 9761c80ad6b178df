"""The layout of an ONNX export folder, shared by the stages that write it (export, quantize).

One folder is both a model folder in the transformers.js / onnx-community layout (config, tokenizer
and processor files at the top, graphs in onnx/ with a suffix per precision) and a set of variants
in this project's sense: each precision has a manifest in variants/<PRECISION>/ whose files point
into onnx/. Why there and not beside the graphs: the manifest contract is one manifest per variant
folder, while the ecosystem puts every precision's graphs side by side in one onnx/ folder; a
variants/ folder keeps both true and is ignored by transformers.js.

Also here: the float16 recipe and the save/validate steps every writer of these graphs uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from allava.variant import Manifest, writing_variant

FORMAT = "onnx"
GRAPHS = ("vision_encoder", "embed_tokens", "decoder_model_merged")
ROLES = {"vision_encoder": "vision_encoder", "embed_tokens": "embed_tokens", "decoder_model_merged": "model"}
SUFFIX = {"FP32": "", "FP16": "_fp16", "INT8": "_quantized", "Q4": "_q4", "Q4F16": "_q4f16"}  # transformers.js dtypes
VARIANTS_DIR = "variants"
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with room for the graph itself
# Kept in float32 by the fp16 conversion: Phi-2's attention scores and softmax overflow in fp16,
# and layer norms lose the small variances; MatMuls, GELU and the rest run in fp16.
FP16_KEEP_FLOAT32 = ["Softmax", "LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Div", "Exp", "Range", "Where"]


class GraphError(RuntimeError):
    """A graph that does not validate after writing; the message names the file."""


def graph_file(graph: str, precision: str) -> str:
    return f"{graph}{SUFFIX[precision]}.onnx"


def graph_path(root: Path, graph: str, precision: str) -> Path:
    return root / "onnx" / graph_file(graph, precision)


def variant_dir(root: Path, precision: str) -> Path:
    return root / VARIANTS_DIR / precision


def graph_files(root: Path, graph: str, precision: str) -> list[Path]:
    """The graph's .onnx file and, when it has one, its external data file."""
    path = graph_path(root, graph, precision)
    data = path.with_name(path.name + "_data")
    return [path, data] if data.exists() else [path]


def describe_variant(root: Path, precision: str, source: dict[str, str], created_by: str, **extra: Any) -> Manifest:
    """Write the manifest of one precision whose graphs are already in place under root/onnx/."""
    vdir = variant_dir(root, precision)
    vdir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str | Path] = {}
    for graph in GRAPHS:
        for k, f in enumerate(graph_files(root, graph, precision)):
            files[ROLES[graph] + ("_data" if k else "")] = f.resolve()
    man = Manifest.for_files(vdir, files, format=FORMAT, precision=precision, name=root.name, source=source,
                             created_by=created_by, runtime="onnxruntime", model_folder=os.path.relpath(root, vdir),
                             suffix=SUFFIX[precision], **extra)
    with writing_variant(vdir):
        man.write(vdir)
    return man


def save_graph(model: Any, path: Path, external: bool | None = None) -> None:
    """Save a ModelProto; its weights go to {file}_data when asked or when it would pass 2 GB."""
    import onnx

    if external is None:  # ByteSize() itself fails past 2 GB: count the weights instead
        external = sum(len(t.raw_data) for t in model.graph.initializer) > EXTERNAL_DATA_BYTES
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + "_data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def external_tensors(model: Any) -> list[Any]:
    """Initializers whose data lives in an external file."""
    from onnx.external_data_helper import uses_external_data

    return [t for t in model.graph.initializer if uses_external_data(t)]


def rename_external_data(path: Path) -> None:
    """Give a graph's external data file the name transformers.js looks for ({file}_data, not {file}.data),
    rewriting the references in the graph (its weights are never loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tensors = external_tensors(model)
    if not tensors:
        return
    old = {e.value for t in tensors for e in t.external_data if e.key == "location"}
    if old == {path.name + "_data"}:
        return
    if len(old) != 1:
        raise GraphError(f"{path}: weights spread over {len(old)} external files; expected one")
    os.replace(path.parent / old.pop(), path.with_name(path.name + "_data"))
    for t in tensors:
        for e in t.external_data:
            if e.key == "location":
                e.value = path.name + "_data"
    onnx.save_model(model, str(path))


def validate_graph(path: Path) -> None:
    """onnx.checker on the file (external data included) and an ONNX Runtime session that opens it."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path), full_check=False)
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - checker and ORT raise many types; the file is unusable either way
        raise GraphError(f"{path}: the written graph does not validate ({type(exc).__name__}: {str(exc)[:300]})") from exc


def to_fp16(model: Any) -> Any:
    """float16 weights and compute with float32 inputs/outputs (runtimes feed float32 and get float32
    logits), the ops in FP16_KEEP_FLOAT32 kept in float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP16_KEEP_FLOAT32)
    OnnxModel(half).topological_sort()  # the converter appends its input casts at the end of the graph
    return half
