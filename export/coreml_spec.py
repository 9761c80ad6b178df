"""Check (3) of a CoreML variant: the saved packages' contract, read from the files alone.

Why a spec check at all: on Linux nothing executes a package through CoreML, so the export must
at least prove that what it wrote is what a device app will be handed: the input, output and state
names, types and flexible shapes; the deployment target that stateful and per-block programs need
(iOS 18, specification version 9); which operations the program holds; and that the weights are in
the precision the variant claims (fp16 constants, or int8/int4/4-bit-LUT constexpr ops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from allava.coreml_layout import EMBED_PACKAGE, STATES, VISION_PACKAGE, lm_input_name, lm_output_name

IOS18_SPEC_VERSION = 9
_ARRAY_TYPES = {65552: "fp16", 65568: "fp32", 131104: "int32"}  # ArrayFeatureType.ArrayDataType values


class SpecError(ValueError):
    """A package whose contract differs from what the layout promises; the message names it."""


def _feature(f: Any) -> dict[str, Any]:
    kind = f.type.WhichOneof("Type")
    if kind == "stateType":
        arr = f.type.stateType.arrayType
        return {"name": f.name, "kind": "state", "dtype": _ARRAY_TYPES.get(arr.dataType, str(arr.dataType)),
                "shape": list(arr.shape)}
    arr = f.type.multiArrayType
    ranges = [[int(r.lowerBound), int(r.upperBound)] for r in arr.shapeRange.sizeRanges]
    return {"name": f.name, "kind": "tensor", "dtype": _ARRAY_TYPES.get(arr.dataType, str(arr.dataType)),
            "shape": ranges or list(arr.shape)}


def weight_precisions(program: Any) -> dict[str, int]:
    """How the weights of linear/conv/gather ops are stored: fp16/fp32 constants, int8/int4 per-channel
    or per-block quantized (constexpr_blockwise_shift_scale), or n-bit lookup tables (constexpr_lut_to_dense)."""
    from coremltools.converters.mil.mil import types

    producers = {op.outputs[0].name: op for op in program.ops}
    counts: dict[str, int] = {}
    for op in program.ops:
        if op.op_type not in ("linear", "conv", "gather"):
            continue
        w = op.inputs.get("weight") if op.op_type != "gather" else op.inputs.get("x")
        src = producers.get(w.name) if w is not None else None
        if src is None:
            continue
        if src.op_type == "constexpr_blockwise_shift_scale":
            kind = types.builtin_to_string(src.inputs["data"].dtype)  # "int8", "int4"
        elif src.op_type == "constexpr_lut_to_dense":
            kind = f"lut{int(src.inputs['lut'].shape[-2]).bit_length() - 1}bit"
        elif src.op_type == "const":
            kind = types.builtin_to_string(src.outputs[0].dtype)  # "fp16", "fp32"
        else:
            continue
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


EXPECTED_WEIGHTS = {"FP16": ("fp16",), "INT8": ("int8",), "INT4": ("int4",), "PALETTE4": ("lut4bit",)}


def check_package(path: Path, precision: str, role: str, index: int = 0, n_chunks: int = 1) -> dict[str, Any]:
    """The contract of one package; raises SpecError when it is not what the layout promises."""
    from coremltools.models.utils import load_spec

    from runtimes.coreml_mil import MilProgram

    spec = load_spec(str(path))
    desc = spec.description
    inputs = [_feature(f) for f in desc.input]
    outputs = [_feature(f) for f in desc.output]
    states = [_feature(f) for f in desc.state]
    program = MilProgram(path, materialize=False)
    info = {"package": path.name, "specification_version": spec.specificationVersion,
            "deployment_target": "iOS18" if spec.specificationVersion >= IOS18_SPEC_VERSION else f"spec {spec.specificationVersion}",
            "inputs": inputs, "outputs": outputs, "states": states, "op_counts": program.op_counts(),
            "weights": weight_precisions(program),
            "metadata": {"author": desc.metadata.author, "license": desc.metadata.license,
                         "short_description": desc.metadata.shortDescription}}
    want_in, want_out, want_states = {
        "vision": (["pixel_values"], ["image_features"], []),
        "embed_tokens": (["input_ids"], ["inputs_embeds"], []),
        "model": ([lm_input_name(index), "causal_mask"], [lm_output_name(index, n_chunks)], list(STATES)),
    }[role]
    problems = []
    if [f["name"] for f in inputs] != want_in:
        problems.append(f"inputs {[f['name'] for f in inputs]}, expected {want_in}")
    if [f["name"] for f in outputs] != want_out:
        problems.append(f"outputs {[f['name'] for f in outputs]}, expected {want_out}")
    if [f["name"] for f in states] != want_states or any(s["dtype"] != "fp16" for s in states):
        problems.append(f"states {[(s['name'], s['dtype']) for s in states]}, expected fp16 {want_states}")
    if spec.specificationVersion < IOS18_SPEC_VERSION:
        problems.append(f"specification version {spec.specificationVersion}, expected >= {IOS18_SPEC_VERSION} (iOS 18)")
    if role == "model" and not all(len(r) == 2 and r[1] > r[0] for r in inputs[1]["shape"][2:]):
        problems.append(f"causal_mask shape {inputs[1]['shape']}: query and key lengths must be flexible")
    expected = EXPECTED_WEIGHTS[precision]
    off = {k: n for k, n in info["weights"].items() if k not in expected}
    if off:
        problems.append(f"weights stored as {off}, expected only {expected} for {precision}")
    if problems:
        raise SpecError(f"{path}: " + "; ".join(problems))
    info["ok"] = True
    return info


def check_variant(vdir: Path, precision: str, packages: list[str]) -> dict[str, Any]:
    """Every package of a variant folder, in role order (vision, embed_tokens, language-model chunks)."""
    lm = [p for p in packages if p not in (VISION_PACKAGE, EMBED_PACKAGE)]
    out = {VISION_PACKAGE: check_package(vdir / VISION_PACKAGE, precision, "vision"),
           EMBED_PACKAGE: check_package(vdir / EMBED_PACKAGE, precision, "embed_tokens")}
    for i, name in enumerate(lm):
        out[name] = check_package(vdir / name, precision, "model", i, len(lm))
    return out
