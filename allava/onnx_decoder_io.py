"""The decoder graph's memory-lean interface: ``num_logits_to_keep`` and a float16 KV cache.

Both are rewrites of an exported decoder_model_merged graph (any precision), applied by the stages
that write one (export/to_onnx.py, quantize/run.py --format onnx), and both follow what transformers.js
already does with such a graph, so its users need nothing new:

* ``num_logits_to_keep`` (int64 scalar input): the decoder computes logits only for the last N
  positions; 0 keeps all (transformers' ``logits_to_keep`` rule, and transformers.js' default when it
  scores). transformers.js feeds 1 while generating when the session declares the input
  (``setNumLogitsToKeep`` in its modeling_utils.js). Why: a prefill over ALLaVA-3B's ~620 prompt
  positions otherwise returns 620 x 51,200 float32 logits (~120 MiB) of which generation reads one row,
  and spends the language-model head's largest matmul on them.
* float16 KV cache: past_key_values.* inputs and present.* outputs in float16, cast to and from float32
  at the graph's edge (attention still runs in the graph's own precision). transformers.js makes its
  empty cache with the dtype the session declares. Why: the runtime holds the past beside the present
  of every step, twice a 20-80 MiB-per-100-positions cache at the ALLaVA-3B shape (docs/memory.md).

Each rewrite is idempotent (a graph that already has it is returned as is) and leaves the weights
untouched, so it applies to a graph whose weights stay in external data.
"""

from __future__ import annotations

from typing import Any

KEEP_INPUT = "num_logits_to_keep"
PAST_PREFIX, PRESENT_PREFIX = "past_key_values.", "present."
KV_DTYPES = ("float32", "float16")
_INT64_MAX = 2**63 - 1


class DecoderIOError(RuntimeError):
    """The graph is not a decoder this module knows how to rewrite; the message says what is missing."""


def has_logits_to_keep(model: Any) -> bool:
    return any(i.name == KEEP_INPUT for i in model.graph.input)


def kv_cache_dtype(model: Any) -> str:
    """The element type of the past_key_values inputs: "float32" or "float16"."""
    from onnx import TensorProto

    past = [i for i in model.graph.input if i.name.startswith(PAST_PREFIX)]
    if not past:
        raise DecoderIOError("the graph has no past_key_values.* inputs; expected a decoder_model_merged graph")
    return "float16" if past[0].type.tensor_type.elem_type == TensorProto.FLOAT16 else "float32"


def _rename_everywhere(model: Any, old: str, new: str) -> None:
    """Point every node input/output and value_info named ``old`` at ``new`` (graph inputs/outputs excluded)."""
    for node in model.graph.node:
        for seq in (node.input, node.output):
            for k, name in enumerate(seq):
                if name == old:
                    seq[k] = new
    for vi in model.graph.value_info:
        if vi.name == old:
            vi.name = new


def _final_norm_output(model: Any) -> tuple[int, str]:
    """The index and output name of the LayerNormalization the logits are computed from: the first one met
    walking back from the ``logits`` output (the head reads only the final norm, so every path from the
    logits passes through it before any earlier norm)."""
    producer = {out: (k, n) for k, n in enumerate(model.graph.node) for out in n.output}
    frontier, seen = ["logits"], set()
    while frontier:
        nxt = []
        for name in frontier:
            if name in seen or name not in producer:
                continue
            seen.add(name)
            k, node = producer[name]
            if node.op_type == "LayerNormalization":
                return k, node.output[0]
            nxt.extend(node.input)
        frontier = nxt
    raise DecoderIOError("no LayerNormalization found upstream of the 'logits' output; expected a Phi decoder graph")


def add_logits_to_keep(model: Any) -> Any:
    """Add the ``num_logits_to_keep`` input: Slice(final_norm, starts=[-N], ends=[max], axes=[1]) in front of
    the head. Slice's own rules give the semantics: N=0 -> start 0, every position; N past the length -> clamped."""
    from onnx import TensorProto, helper

    if has_logits_to_keep(model):
        return model
    k, norm_out = _final_norm_output(model)
    kept = norm_out + "_kept"
    _rename_consumers(model, norm_out, kept)
    nodes = [
        helper.make_node("Neg", [KEEP_INPUT], [KEEP_INPUT + "_neg"]),
        helper.make_node("Constant", [], [KEEP_INPUT + "_axes0"], value=helper.make_tensor("a0", TensorProto.INT64, [1], [0])),
        helper.make_node("Unsqueeze", [KEEP_INPUT + "_neg", KEEP_INPUT + "_axes0"], [KEEP_INPUT + "_starts"]),
        helper.make_node("Constant", [], [KEEP_INPUT + "_ends"], value=helper.make_tensor("e", TensorProto.INT64, [1], [_INT64_MAX])),
        helper.make_node("Constant", [], [KEEP_INPUT + "_axes"], value=helper.make_tensor("a1", TensorProto.INT64, [1], [1])),
        helper.make_node("Slice", [norm_out, KEEP_INPUT + "_starts", KEEP_INPUT + "_ends", KEEP_INPUT + "_axes"], [kept]),
    ]
    for offset, node in enumerate(nodes, start=1):
        model.graph.node.insert(k + offset, node)
    model.graph.input.append(helper.make_tensor_value_info(KEEP_INPUT, TensorProto.INT64, []))
    for out in model.graph.output:
        if out.name == "logits" and len(out.type.tensor_type.shape.dim) >= 2:
            dim = out.type.tensor_type.shape.dim[1]
            dim.Clear()
            dim.dim_param = "logits_sequence_length"
    return model


def _rename_consumers(model: Any, old: str, new: str) -> None:
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new


def set_kv_cache_dtype(model: Any, dtype: str) -> Any:
    """past_key_values.* / present.* in ``dtype`` at the graph's edge (a Cast after each past input and before
    each present output). Only float32 -> float16 is a rewrite; asking for the dtype the graph has is a no-op."""
    from onnx import TensorProto, helper

    if dtype not in KV_DTYPES:
        raise DecoderIOError(f"unknown KV cache dtype {dtype!r}; choose from {', '.join(KV_DTYPES)}")
    have = kv_cache_dtype(model)
    if have == dtype:
        return model
    if have != "float32":
        raise DecoderIOError(f"the graph's KV cache is {have}; only a float32 cache can be rewritten to {dtype}")
    casts = []  # (index in the node list to insert at, Cast node)
    for inp in model.graph.input:
        if inp.name.startswith(PAST_PREFIX):
            inner = inp.name + "_f32"
            _rename_everywhere(model, inp.name, inner)
            casts.append((_first_consumer(model, inner), helper.make_node("Cast", [inp.name], [inner], to=TensorProto.FLOAT)))
            inp.type.tensor_type.elem_type = TensorProto.FLOAT16
    for out in model.graph.output:
        if out.name.startswith(PRESENT_PREFIX):
            inner = out.name + "_f32"
            _rename_everywhere(model, out.name, inner)
            casts.append((_producer(model, inner) + 1, helper.make_node("Cast", [inner], [out.name], to=TensorProto.FLOAT16)))
            out.type.tensor_type.elem_type = TensorProto.FLOAT16
    # Each Cast sits next to the node that reads or writes its tensor, not all at one end of the graph:
    # ONNX Runtime runs nodes in this order, and 64 casts up front would hold a float32 copy of the whole
    # cache at once (measured at the ALLaVA-3B shape: +~390 MiB at every step, docs/memory.md).
    for pos, node in sorted(casts, key=lambda c: c[0], reverse=True):
        model.graph.node.insert(pos, node)
    return model


def _first_consumer(model: Any, name: str) -> int:
    return next((k for k, n in enumerate(model.graph.node) if name in n.input), len(model.graph.node))


def _producer(model: Any, name: str) -> int:
    return next(k for k, n in enumerate(model.graph.node) if name in n.output)


def lean_decoder(model: Any, kv_cache: str = "float32") -> Any:
    """Both rewrites: ``num_logits_to_keep`` always, the KV cache in ``kv_cache``."""
    return set_kv_cache_dtype(add_logits_to_keep(model), kv_cache)


def rewrite_decoder_file(path: Any, kv_cache: str = "float32") -> None:
    """Apply lean_decoder to a saved graph in place; its external weights are neither read nor rewritten."""
    import onnx

    from allava.fileio import atomic_path

    model = onnx.load(str(path), load_external_data=False)
    before = (has_logits_to_keep(model), kv_cache_dtype(model))
    lean_decoder(model, kv_cache)
    if before == (True, kv_cache):
        return
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
