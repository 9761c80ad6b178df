"""A reference evaluator for saved CoreML ML programs: runs the package's own MIL program op by op in numpy.

Why: CoreML's predict runs only on macOS, so on Linux nothing else can say whether a saved
``.mlpackage`` computes what the PyTorch model does. This evaluator reads the package back with
coremltools' own protobuf loader (the exact program and weights a device would get, compression
ops included), then executes each operation with a plain numpy definition of its MIL semantics.
Each result is rounded to the dtype the program declares for that op's output, so an fp16 program
is evaluated with fp16 intermediates (ops the converter kept in fp32, such as attention scores and
softmax, stay fp32), and int8/int4/palettized weights are expanded by coremltools' own
``materialized_val_inference`` of the constexpr ops, i.e. the values a device would dequantize to.

What it is not: a model of the Neural Engine's or GPU's accumulation order, so figures from it
are the program's arithmetic at its declared precisions, not device bit-exactness. An op the
programs do not use raises ``UnsupportedOpError`` naming it, rather than being guessed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_NP_DTYPES = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int8": np.int8, "uint8": np.uint8,
              "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


class UnsupportedOpError(NotImplementedError):
    """The program holds an operation this evaluator has no definition for."""


def _gelu(x: np.ndarray, mode: str) -> np.ndarray:
    x = x.astype(np.float32)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1.0 + np.exp(-1.702 * x))
    from math import erf

    return 0.5 * x * (1.0 + np.vectorize(erf, otypes=[np.float32])(x / np.sqrt(2.0)))


def _slice_index(shape: tuple[int, ...], begin: np.ndarray, end: np.ndarray, stride: np.ndarray | None,
                 begin_mask: np.ndarray | None, end_mask: np.ndarray | None) -> tuple[slice, ...]:
    out = []
    for i in range(len(shape)):
        b = None if begin_mask is not None and begin_mask[i] else int(begin[i])
        e = None if end_mask is not None and end_mask[i] else int(end[i])
        out.append(slice(b, e, 1 if stride is None else int(stride[i])))
    return tuple(out)


def _squeeze(x: np.ndarray, squeeze_mask: np.ndarray | None) -> np.ndarray:
    if squeeze_mask is None or not np.any(squeeze_mask):
        return x
    return np.squeeze(x, axis=tuple(int(i) for i in np.flatnonzero(squeeze_mask)))


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides: np.ndarray, pad: np.ndarray, pad_type: str,
          dilations: np.ndarray, groups: int) -> np.ndarray:
    """2-D convolution (NCHW, weights OIHW), explicit or valid padding; what the CLIP patch embedding uses."""
    if x.ndim != 4 or groups != 1 or np.any(dilations != 1) or pad_type not in ("valid", "custom"):
        raise UnsupportedOpError(f"conv with rank {x.ndim}, groups {groups}, dilations {dilations.tolist()}, pad_type {pad_type}")
    if pad_type == "custom" and np.any(pad):
        x = np.pad(x, ((0, 0), (0, 0), (int(pad[0]), int(pad[1])), (int(pad[2]), int(pad[3]))))
    kh, kw = w.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::int(strides[0]), ::int(strides[1])]
    y = np.einsum("nchwij,ocij->nohw", win.astype(np.float32), w.astype(np.float32))
    return y + b.astype(np.float32)[None, :, None, None] if b is not None else y


def _layer_norm(x: np.ndarray, axes: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None, eps: float) -> np.ndarray:
    x = x.astype(np.float32)
    ax = tuple(int(a) for a in axes)
    mean = x.mean(axis=ax, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=ax, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma.astype(np.float32)
    if beta is not None:
        y = y + beta.astype(np.float32)
    return y


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _matmul(x: np.ndarray, y: np.ndarray, tx: bool, ty: bool) -> np.ndarray:
    x, y = x.astype(np.float32), y.astype(np.float32)
    if tx:
        x = np.swapaxes(x, -1, -2)
    if ty:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _gather(x: np.ndarray, indices: np.ndarray, axis: int, batch_dims: int) -> np.ndarray:
    if batch_dims:
        raise UnsupportedOpError(f"gather with batch_dims={batch_dims}")
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take(x, idx, axis=axis)


def _slice_update(a: dict[str, Any]) -> np.ndarray:
    x = np.array(a["x"], copy=True)
    sl = _slice_index(x.shape, a["begin"], a["end"], a.get("stride"), a.get("begin_mask"), a.get("end_mask"))
    upd = np.asarray(a["update"])
    target = x[sl]
    x[sl] = upd.reshape(target.shape)  # squeezed axes come back as the size-1 axes they were
    return x


# op type -> f(inputs by name) ; each returns one array (rounded to the declared dtype by the caller)
OPS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "identity": lambda a: a["x"],
    "add": lambda a: np.add(a["x"].astype(np.float32), a["y"]) if a["x"].dtype.kind == "f" else a["x"] + a["y"],
    "sub": lambda a: np.subtract(a["x"].astype(np.float32), a["y"]) if a["x"].dtype.kind == "f" else a["x"] - a["y"],
    "mul": lambda a: np.multiply(a["x"].astype(np.float32), a["y"]) if a["x"].dtype.kind == "f" else a["x"] * a["y"],
    "real_div": lambda a: np.divide(a["x"].astype(np.float32), a["y"]),
    "floor_div": lambda a: np.floor_divide(a["x"], a["y"]),
    "pow": lambda a: np.power(a["x"].astype(np.float32), a["y"]),
    "maximum": lambda a: np.maximum(a["x"], a["y"]),
    "minimum": lambda a: np.minimum(a["x"], a["y"]),
    "greater_equal": lambda a: a["x"] >= a["y"],
    "greater": lambda a: a["x"] > a["y"],
    "less": lambda a: a["x"] < a["y"],
    "less_equal": lambda a: a["x"] <= a["y"],
    "equal": lambda a: a["x"] == a["y"],
    "logical_and": lambda a: np.logical_and(a["x"], a["y"]),
    "logical_not": lambda a: np.logical_not(a["x"]),
    "select": lambda a: np.where(a["cond"], a["a"], a["b"]),
    "sqrt": lambda a: np.sqrt(a["x"].astype(np.float32)),
    "rsqrt": lambda a: 1.0 / np.sqrt(a["x"].astype(np.float32) + float(a.get("epsilon", 1e-12))),
    "exp": lambda a: np.exp(a["x"].astype(np.float32)),
    "tanh": lambda a: np.tanh(a["x"].astype(np.float32)),
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a["x"].astype(np.float32))),
    "relu": lambda a: np.maximum(a["x"], 0),
    "gelu": lambda a: _gelu(a["x"], str(a.get("mode", "EXACT"))),
    "softmax": lambda a: _softmax(a["x"], int(a["axis"])),
    "layer_norm": lambda a: _layer_norm(a["x"], a["axes"], a.get("gamma"), a.get("beta"), float(a.get("epsilon", 1e-5))),
    "linear": lambda a: np.matmul(a["x"].astype(np.float32), a["weight"].astype(np.float32).T)
    + (a["bias"].astype(np.float32) if a.get("bias") is not None else 0.0),
    "matmul": lambda a: _matmul(a["x"], a["y"], bool(a.get("transpose_x", False)), bool(a.get("transpose_y", False))),
    "conv": lambda a: _conv(a["x"], a["weight"], a.get("bias"), a["strides"], a["pad"], str(a["pad_type"]),
                            a["dilations"], int(a["groups"])),
    "reshape": lambda a: np.reshape(a["x"], [int(d) for d in a["shape"]]),
    "transpose": lambda a: np.transpose(a["x"], [int(p) for p in a["perm"]]),
    "expand_dims": lambda a: np.expand_dims(a["x"], tuple(int(i) for i in a["axes"])),
    "squeeze": lambda a: np.squeeze(a["x"], tuple(int(i) for i in a["axes"])) if a.get("axes") is not None else np.squeeze(a["x"]),
    "concat": lambda a: np.concatenate([np.atleast_1d(v) for v in a["values"]], axis=int(a["axis"])),
    "tile": lambda a: np.tile(a["x"], [int(r) for r in a["reps"]]),
    "shape": lambda a: np.asarray(np.shape(a["x"]), dtype=np.int32),
    "cast": lambda a: np.asarray(a["x"]).astype(_NP_DTYPES[str(a["dtype"])]),
    "gather": lambda a: _gather(a["x"], a["indices"], int(a.get("axis", 0)), int(a.get("batch_dims", 0))),
    "slice_by_index": lambda a: _squeeze(np.asarray(a["x"])[_slice_index(np.shape(a["x"]), a["begin"], a["end"], a.get("stride"),
                                                                       a.get("begin_mask"), a.get("end_mask"))],
                                         a.get("squeeze_mask")),
    "slice_by_size": lambda a: np.asarray(a["x"])[tuple(slice(int(b), None if int(s) == -1 else int(b) + int(s))
                                                       for b, s in zip(a["begin"], a["size"], strict=True))],
    "slice_update": _slice_update,
    "range_1d": lambda a: np.arange(a["start"], a["end"], a["step"]),
    "fill": lambda a: np.full([int(d) for d in a["shape"]], a.get("value", 0.0)),
    "reduce_mean": lambda a: np.mean(a["x"].astype(np.float32), axis=tuple(int(i) for i in a["axes"]),
                                     keepdims=bool(a.get("keep_dims", False))),
    "reduce_sum": lambda a: np.sum(a["x"].astype(np.float32), axis=tuple(int(i) for i in a["axes"]),
                                   keepdims=bool(a.get("keep_dims", False))),
}


class MilProgram:
    """One saved ``.mlpackage``'s main function, runnable in numpy with persistent states.

    ``states`` holds each state's current value (zeros at start, as ``make_state`` gives on device);
    ``run`` executes the program once and writes the state updates back."""

    def __init__(self, package: str | Path, materialize: bool = True) -> None:
        """``materialize=False`` reads the program without expanding its weights (structure only:
        op counts and types for the spec check of a multi-GB package)."""
        from coremltools.converters.mil.frontend.milproto.load import load as load_milproto
        from coremltools.converters.mil.mil import types
        from coremltools.models.utils import load_spec

        self.path = Path(package)
        spec = load_spec(str(self.path))
        weights = os.path.join(str(self.path), "Data", "com.apple.CoreML", "weights")
        program = load_milproto(spec, specification_version=spec.specificationVersion, file_weights_dir=weights)
        self.function = program.functions["main"]
        self._types = types
        self.inputs = {name: var for name, var in self.function.inputs.items() if not types.is_state(var.sym_type)}
        self.state_vars = {name: var for name, var in self.function.inputs.items() if types.is_state(var.sym_type)}
        self.output_names = [v.name for v in self.function.outputs]
        self.ops = list(self.function.operations)
        self.constants: dict[str, Any] = {}
        for op in self.ops if materialize else ():  # weights and constexpr (compressed) weights, expanded once
            if op.op_type == "const":
                self.constants[op.outputs[0].name] = self._as_array(op.outputs[0].val)
            elif op.op_type.startswith("constexpr_"):
                vals = op.materialized_val_inference()
                for out, val in zip(op.outputs, vals if isinstance(vals, tuple) else (vals,), strict=True):
                    self.constants[out.name] = self._as_array(val, out)
        # the executable ops with their input names and output dtype, resolved once (run is the decode hot path)
        self._plan = [(op, {k: ([x.name for x in v] if isinstance(v, (list, tuple)) else v.name) for k, v in op.inputs.items()},
                       op.outputs[0].name, self._dtype(op.outputs[0]))
                      for op in self.ops if op.op_type != "const" and not op.op_type.startswith("constexpr_")]
        self.input_dtypes = {name: self._dtype(var) for name, var in self.inputs.items()}
        self.states: dict[str, np.ndarray] = {}
        self.reset()

    def _dtype(self, var: Any) -> Any:
        return _NP_DTYPES.get(self._types.builtin_to_string(var.dtype))

    def _as_array(self, val: Any, var: Any = None) -> Any:
        if isinstance(val, (str, bool)) or val is None:
            return val
        arr = np.asarray(val)
        if var is not None and self._dtype(var) is not None:
            arr = arr.astype(self._dtype(var))
        return arr

    def reset(self) -> None:
        for name, var in self.state_vars.items():
            wrapped = var.sym_type.wrapped_type()
            self.states[name] = np.zeros(wrapped.get_shape(), dtype=_NP_DTYPES[self._types.builtin_to_string(wrapped.get_primitive())])

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.op_type] = counts.get(op.op_type, 0) + 1
        return dict(sorted(counts.items()))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, Any] = dict(self.constants)
        for name, dtype in self.input_dtypes.items():
            if name not in feeds:
                raise KeyError(f"{self.path.name}: missing input {name!r}")
            env[name] = np.asarray(feeds[name]).astype(dtype)
        for name in self.state_vars:
            env[name] = self.states[name]
        for op, inputs, out_name, dtype in self._plan:
            args = {k: ([env[x] for x in v] if isinstance(v, list) else env[v]) for k, v in inputs.items()}
            if op.op_type == "read_state":
                result: Any = np.array(args["input"], copy=True)
            elif op.op_type == "coreml_update_state":
                state = inputs["state"]
                self.states[state] = np.asarray(args["value"]).astype(self.states[state].dtype)
                env[state] = self.states[state]
                result = args["value"]
            else:
                fn = OPS.get(op.op_type)
                if fn is None:
                    raise UnsupportedOpError(f"{self.path.name}: op {op.op_type!r} ({op.name}) has no reference definition")
                try:
                    result = fn(args)
                except (ValueError, IndexError, TypeError) as exc:
                    shapes = {k: np.shape(v) for k, v in args.items() if not isinstance(v, list)}
                    raise RuntimeError(f"{self.path.name}: {op.op_type} {op.name} failed on inputs {shapes}: {exc}") from exc
            env[out_name] = np.asarray(result).astype(dtype) if dtype is not None else np.asarray(result)
        return {name: env[name] for name in self.output_names}
