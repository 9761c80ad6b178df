"""Write a LLaVA-Phi checkpoint as two GGUF files: the phi2 language model and the clip mmproj.

Why our own writer instead of llama.cpp's convert scripts: the legacy LLaVA converter picks the
wrong vision layer unless `clip.vision.feature_layer` is written explicitly, maps the projector to
another variant, and drops a block (see FORMATS.md). Every key and tensor name here comes from the
`gguf` package (`Keys`, `TENSOR_NAMES`); the projector is mapped by hand because gguf 0.19 has no
"mlp" projector constant. Tensors are streamed one at a time (header and tensor info first, then
data), so a 3B export needs about one tensor of extra memory, and every file is read back with
`GGUFReader` before it is renamed into place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import MODEL_TENSOR as T
from gguf import GGMLQuantizationType as QT
from gguf import Keys, LlamaFileType, TokenType
from tqdm import tqdm

from allava.chat import gguf_chat_template
from allava.checkpoint import Checkpoint, load_tokenizer_info
from allava.formats import get_format
from export.errors import ExportError

# The precisions the writer produces are the format table's export precisions (allava/formats.py).
OUTTYPES = {p.cli: p.name for p in get_format("gguf").made_by("export")}
MMPROJ_OUTTYPES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0"}  # the vision side is small and sensitive
_FILE_TYPE = {"F32": LlamaFileType.ALL_F32, "F16": LlamaFileType.MOSTLY_F16, "BF16": LlamaFileType.MOSTLY_BF16,
              "Q8_0": LlamaFileType.MOSTLY_Q8_0}
# Pre-tokenizer name: llama.cpp only accepts names it knows; "gpt-2" is the GPT-2 regex, which is
# what both our byte-level BPE and Phi-2's tokenizer use.
PRE_TOKENIZER = "gpt-2"
CLIP_PROJECTOR_MLP = "mlp"  # clip.cpp PROJECTOR_TYPE_MLP; no constant in gguf 0.19
KEY_FEATURE_LAYER = "clip.vision.feature_layer"  # clip-impl.h KEY_FEATURE_LAYERS; no constant in gguf 0.19


def tname(t: T, bid: int | None = None, suffix: str = "weight") -> str:
    base = gguf.TENSOR_NAMES[t]
    return (base.format(bid=bid) if bid is not None else base) + (f".{suffix}" if suffix else "")


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # logical numpy shape (outermost first)
    qtype: QT
    load: Callable[[], torch.Tensor]


def _qtype_for(shape: tuple[int, ...], precision: str) -> QT:
    """1-D tensors (norms, biases, class embedding) stay F32 like llama.cpp's converter does."""
    if precision == "F32" or len(shape) < 2:
        return QT.F32
    if precision == "Q8_0":
        return QT.Q8_0 if shape[-1] % 32 == 0 and len(shape) == 2 else QT.F16
    return QT.BF16 if precision == "BF16" else QT.F16


def _encode(t: torch.Tensor, qtype: QT) -> np.ndarray:
    if qtype == QT.F32:
        return t.to(torch.float32).contiguous().numpy()
    if qtype == QT.F16:
        return t.to(torch.float16).contiguous().numpy()
    if qtype == QT.BF16:
        u16 = t.to(torch.bfloat16).contiguous().view(torch.int16).numpy()
        return u16.view(np.uint8)
    return gguf.quants.quantize(t.to(torch.float32).numpy(), qtype)


def _nbytes_and_store_shape(shape: tuple[int, ...], qtype: QT) -> tuple[np.dtype, tuple[int, ...], int, QT | None]:
    if qtype == QT.F32:
        return np.dtype(np.float32), shape, int(np.prod(shape)) * 4, None
    if qtype == QT.F16:
        return np.dtype(np.float16), shape, int(np.prod(shape)) * 2, None
    byte_shape = tuple(gguf.quant_shape_to_byte_shape(shape, qtype))
    return np.dtype(np.uint8), byte_shape, int(np.prod(byte_shape)), qtype


def write_file(path: Path, arch: str, kv: Callable[[gguf.GGUFWriter], None], plan: list[PlannedTensor],
           desc: str) -> None:
    w = gguf.GGUFWriter(path, arch)
    try:
        kv(w)
        for p in plan:
            dtype, store_shape, nbytes, raw = _nbytes_and_store_shape(p.shape, p.qtype)
            w.add_tensor_info(p.name, store_shape, dtype, nbytes, raw_dtype=raw)
        w.write_header_to_file(path)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for p in tqdm(plan, desc=desc, unit="tensor", leave=False):
            t = p.load()
            if tuple(t.shape) != p.shape:
                raise ExportError(f"{p.name}: tensor shape {tuple(t.shape)} != planned {p.shape}")
            w.write_tensor_data(_encode(t, p.qtype))
    finally:
        w.close()


def _feature_layer(ck: Checkpoint) -> list[int]:
    """HF `vision_feature_layer` (hidden_states index, negative from the end) -> clip.cpp block count.

    HF hidden_states[0] is the pre-layernormed embedding and hidden_states[i] the output of block i,
    so index -2 of a 4-block tower is block 3's input, i.e. clip.cpp feature layer 3.
    """
    n = int(ck.vision["num_hidden_layers"])
    vfl = ck.config.get("vision_feature_layer", -2)
    layers = vfl if isinstance(vfl, list) else [vfl]
    out = [int(v) if v >= 0 else n + 1 + int(v) for v in layers]
    for v in out:
        if not 0 < v <= n:
            raise ExportError(f"vision_feature_layer {vfl} is out of range for a {n}-block vision tower")
    return out


def plan_mmproj(ck: Checkpoint, precision: str) -> tuple[Callable[[gguf.GGUFWriter], None], list[PlannedTensor]]:
    """mmproj: clip arch, projector "mlp" (mm.0 / mm.2), CLS kept as v.class_embd, no v.post_ln."""
    vc = ck.vision
    if ck.config.get("vision_feature_select_strategy", "default") != "default":
        raise ExportError("only vision_feature_select_strategy='default' (CLS dropped) maps to llama.cpp's llava graph")
    n_layer = int(vc["num_hidden_layers"])
    text_hidden = int(ck.text["hidden_size"])
    # The vision side is small and sensitive: F16 unless F32 or Q8_0 is asked for explicitly.
    mm_prec = precision if precision in MMPROJ_OUTTYPES.values() else "F16"
    feature_layer = _feature_layer(ck)
    mean = ck.config.get("image_mean")
    std = ck.config.get("image_std")
    for fname in ("preprocessor_config.json", "processor_config.json"):
        pp = ck.path / fname
        if pp.is_file() and (mean is None or std is None):
            d = json.loads(pp.read_text())
            d = d.get("image_processor", d)
            mean, std = d.get("image_mean", mean), d.get("image_std", std)
    if mean is None or std is None:
        raise ExportError(f"{ck.path}: no image_mean/image_std in preprocessor_config.json or processor_config.json")

    def kv(w: gguf.GGUFWriter) -> None:
        w.add_name(f"{ck.path.name} mmproj")
        w.add_description("LLaVA-Phi vision projector exported by allava-edge export/to_gguf.py")
        w.add_file_type(_FILE_TYPE[mm_prec])
        w.add_bool(Keys.Clip.HAS_VISION_ENCODER, True)
        w.add_string(Keys.Clip.PROJECTOR_TYPE, CLIP_PROJECTOR_MLP)
        w.add_bool(Keys.ClipVision.USE_GELU, False)  # CLIP's quick-GELU; the projector GELU is fixed
        w.add_uint32(Keys.ClipVision.IMAGE_SIZE, int(vc["image_size"]))
        w.add_uint32(Keys.ClipVision.PATCH_SIZE, int(vc["patch_size"]))
        w.add_uint32(Keys.ClipVision.EMBEDDING_LENGTH, int(vc["hidden_size"]))
        w.add_uint32(Keys.ClipVision.FEED_FORWARD_LENGTH, int(vc["intermediate_size"]))
        w.add_uint32(Keys.ClipVision.BLOCK_COUNT, n_layer)
        w.add_uint32(Keys.ClipVision.PROJECTION_DIM, text_hidden)
        w.add_uint32(Keys.ClipVision.Attention.HEAD_COUNT, int(vc["num_attention_heads"]))
        w.add_float32(Keys.ClipVision.Attention.LAYERNORM_EPS, float(vc.get("layer_norm_eps", 1e-5)))
        w.add_array(Keys.ClipVision.IMAGE_MEAN, [float(x) for x in mean])
        w.add_array(Keys.ClipVision.IMAGE_STD, [float(x) for x in std])
        w.add_array(KEY_FEATURE_LAYER, feature_layer)

    mapping: list[tuple[str, str]] = [
        (tname(T.V_ENC_EMBD_CLS, suffix=""), "vision.embeddings.class_embedding"),
        (tname(T.V_ENC_EMBD_PATCH), "vision.embeddings.patch_embedding.weight"),
        (tname(T.V_ENC_EMBD_POS), "vision.embeddings.position_embedding.weight"),
        (tname(T.V_PRE_NORM), "vision.pre_layrnorm.weight"),
        (tname(T.V_PRE_NORM, suffix="bias"), "vision.pre_layrnorm.bias"),
    ]
    per_block = [
        (T.V_ENC_ATTN_Q, "self_attn.q_proj"), (T.V_ENC_ATTN_K, "self_attn.k_proj"),
        (T.V_ENC_ATTN_V, "self_attn.v_proj"), (T.V_ENC_ATTN_O, "self_attn.out_proj"),
        (T.V_ENC_INPUT_NORM, "layer_norm1"), (T.V_ENC_POST_ATTN_NORM, "layer_norm2"),
        (T.V_ENC_FFN_UP, "mlp.fc1"), (T.V_ENC_FFN_DOWN, "mlp.fc2"),
    ]
    for i in range(n_layer):
        for t, src in per_block:
            for s in ("weight", "bias"):
                mapping.append((tname(t, i, s), f"vision.encoder.layers.{i}.{src}.{s}"))
    for idx, src in ((0, "linear_1"), (2, "linear_2")):
        for s in ("weight", "bias"):
            mapping.append((tname(T.V_MMPROJ, idx, s), f"projector.{src}.{s}"))
    plan = []
    embeddings = {tname(T.V_ENC_EMBD_PATCH), tname(T.V_ENC_EMBD_POS)}
    for name, src in mapping:
        if src not in ck.shapes:
            raise ExportError(f"{ck.path}: missing tensor {src} (needed for {name})")
        shape = ck.shapes[src]
        qt = QT.F32 if name == tname(T.V_ENC_EMBD_CLS, suffix="") else _qtype_for(shape, mm_prec)
        if qt == QT.Q8_0 and name in embeddings:  # added, not multiplied: kept F16 as llama.cpp's converter does
            qt = QT.F16
        plan.append(PlannedTensor(name, shape, qt, (lambda s=src: ck.tensor(s))))
    mm2 = ck.shapes["projector.linear_2.weight"]
    if mm2[0] != text_hidden:
        raise ExportError(f"projector output width {mm2[0]} != language model width {text_hidden}")
    return kv, plan


def plan_lm(ck: Checkpoint, precision: str) -> tuple[Callable[[gguf.GGUFWriter], None], list[PlannedTensor]]:
    """Language model: phi2 arch, NEOX rope over int(partial_rotary_factor * head_dim) dims, zero output.bias."""
    tc = ck.text
    hidden, n_head = int(tc["hidden_size"]), int(tc["num_attention_heads"])
    head_dim = hidden // n_head
    rope = tc.get("rope_parameters") or {}
    prf = float(rope.get("partial_rotary_factor", tc.get("partial_rotary_factor", 0.5)))
    theta = float(rope.get("rope_theta", tc.get("rope_theta", 10000.0)))
    if tc.get("qk_layernorm"):
        raise ExportError("Phi with qk_layernorm is not supported by llama.cpp's phi2 graph")
    n_rows = ck.shapes["text.embed_tokens.weight"][0]
    tok = load_tokenizer_info(ck.path)
    inv = {i: s for s, i in tok["vocab"].items()}
    if max(inv) >= n_rows:
        raise ExportError(f"tokenizer has id {max(inv)} but the embedding has only {n_rows} rows")
    tokens, types = [], []
    for i in range(n_rows):
        if i not in inv:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        else:
            tokens.append(inv[i])
            types.append(TokenType.CONTROL if i in tok["special_ids"] else
                         TokenType.USER_DEFINED if i in tok["added_ids"] else TokenType.NORMAL)
    if not tok["merges"]:
        raise ExportError(f"{ck.path}/tokenizer.json has no BPE merges")
    eos = tok["eos"] if tok["eos"] is not None else tc.get("eos_token_id")
    bos = tok["bos"] if tok["bos"] is not None else tc.get("bos_token_id", eos)

    def kv(w: gguf.GGUFWriter) -> None:
        w.add_name(ck.path.name)
        w.add_description("LLaVA-Phi language model exported by allava-edge export/to_gguf.py")
        w.add_file_type(_FILE_TYPE[precision])
        w.add_context_length(int(tc.get("max_position_embeddings", 2048)))
        w.add_embedding_length(hidden)
        w.add_feed_forward_length(int(tc["intermediate_size"]))
        w.add_block_count(int(tc["num_hidden_layers"]))
        w.add_head_count(n_head)
        w.add_head_count_kv(int(tc.get("num_key_value_heads") or n_head))
        w.add_layer_norm_eps(float(tc.get("layer_norm_eps", 1e-5)))
        w.add_rope_dimension_count(int(prf * head_dim))
        w.add_rope_freq_base(theta)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(PRE_TOKENIZER)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(tok["merges"])
        if bos is not None:
            w.add_bos_token_id(int(bos))
        if eos is not None:
            w.add_eos_token_id(int(eos))
        if tok["pad"] is not None:
            w.add_pad_token_id(int(tok["pad"]))
        w.add_add_bos_token(tok["add_bos"])
        w.add_add_eos_token(False)
        template = gguf_chat_template(tok["chat_template"])  # the llama.cpp form of our chat format
        if template:
            w.add_chat_template(template)

    mapping = [(tname(T.TOKEN_EMBD), "text.embed_tokens.weight"),
               (tname(T.OUTPUT_NORM), "text.final_layernorm.weight"),
               (tname(T.OUTPUT_NORM, suffix="bias"), "text.final_layernorm.bias"),
               (tname(T.OUTPUT), "lm_head.weight")]
    per_block = [(T.ATTN_NORM, "input_layernorm"), (T.ATTN_Q, "self_attn.q_proj"), (T.ATTN_K, "self_attn.k_proj"),
                 (T.ATTN_V, "self_attn.v_proj"), (T.ATTN_OUT, "self_attn.dense"), (T.FFN_UP, "mlp.fc1"),
                 (T.FFN_DOWN, "mlp.fc2")]
    for i in range(int(tc["num_hidden_layers"])):
        for t, src in per_block:
            for s in ("weight", "bias"):
                mapping.append((tname(t, i, s), f"text.layers.{i}.{src}.{s}"))
    plan = []
    for name, src in mapping:
        if src not in ck.shapes:
            raise ExportError(f"{ck.path}: missing tensor {src} (needed for {name})")
        shape = ck.shapes[src]
        plan.append(PlannedTensor(name, shape, _qtype_for(shape, precision), (lambda s=src: ck.tensor(s))))
    # phi2 in llama.cpp requires output.bias; transformers' Llava lm_head has none -> zeros.
    bias_name = tname(T.OUTPUT, suffix="bias")
    if "lm_head.bias" in ck.shapes:
        plan.append(PlannedTensor(bias_name, ck.shapes["lm_head.bias"], QT.F32, lambda: ck.tensor("lm_head.bias")))
    else:
        plan.append(PlannedTensor(bias_name, (n_rows,), QT.F32, lambda: torch.zeros(n_rows)))
    return kv, plan


REQUIRED_LM_KEYS = [f"phi2.{k}" for k in ("context_length", "embedding_length", "feed_forward_length", "block_count",
                                          "attention.head_count", "attention.head_count_kv",
                                          "attention.layer_norm_epsilon", "rope.dimension_count")] + [
    Keys.Tokenizer.MODEL, Keys.Tokenizer.PRE, Keys.Tokenizer.LIST, Keys.Tokenizer.TOKEN_TYPE, Keys.Tokenizer.MERGES,
    Keys.Tokenizer.BOS_ID, Keys.Tokenizer.EOS_ID, Keys.Tokenizer.ADD_BOS]
REQUIRED_MMPROJ_KEYS = [Keys.Clip.HAS_VISION_ENCODER, Keys.Clip.PROJECTOR_TYPE, Keys.ClipVision.IMAGE_SIZE,
                        Keys.ClipVision.PATCH_SIZE, Keys.ClipVision.EMBEDDING_LENGTH,
                        Keys.ClipVision.FEED_FORWARD_LENGTH, Keys.ClipVision.BLOCK_COUNT,
                        Keys.ClipVision.PROJECTION_DIM, Keys.ClipVision.Attention.HEAD_COUNT,
                        Keys.ClipVision.Attention.LAYERNORM_EPS, Keys.ClipVision.IMAGE_MEAN,
                        Keys.ClipVision.IMAGE_STD, KEY_FEATURE_LAYER]


def read_gguf(path: Path) -> gguf.GGUFReader:
    """Open a GGUF file, turning the reader's assorted exceptions into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ExportError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # truncated files surface as ValueError/IndexError/struct errors
        raise ExportError(f"{path}: unreadable or truncated GGUF ({type(e).__name__}: {e})") from e


def validate(path: Path, arch: str, required: list[str], plan: list[PlannedTensor] | None = None) -> dict[str, Any]:
    """Read a written file back: architecture, required keys, tensor names/shapes/types and data bounds."""
    r = read_gguf(path)
    got_arch = r.fields.get(Keys.General.ARCHITECTURE)
    got_arch = got_arch.contents() if got_arch is not None else None
    if got_arch != arch:
        raise ExportError(f"{path}: architecture {got_arch!r}, expected {arch!r}")
    missing = [k for k in required if k not in r.fields]
    if missing:
        raise ExportError(f"{path}: missing keys {missing}")
    tensors = {t.name: t for t in r.tensors}
    size = path.stat().st_size
    for t in r.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ExportError(f"{path}: tensor {t.name} runs past the end of the file (truncated)")
    if plan is not None:
        for p in plan:
            t = tensors.get(p.name)
            if t is None:
                raise ExportError(f"{path}: tensor {p.name} missing after write")
            if tuple(int(x) for x in reversed(t.shape.tolist())) != p.shape or t.tensor_type != p.qtype:
                raise ExportError(f"{path}: tensor {p.name} is {t.shape.tolist()}/{t.tensor_type.name}, "
                                  f"expected {list(reversed(p.shape))}/{p.qtype.name}")
        if len(tensors) != len(plan):
            raise ExportError(f"{path}: {len(tensors)} tensors, expected {len(plan)}")
    if arch == "phi2":
        n_tok = len(r.fields[Keys.Tokenizer.LIST].data)
        rows = int(tensors[tname(T.TOKEN_EMBD)].shape[-1])
        if n_tok != rows:
            raise ExportError(f"{path}: {n_tok} tokens but {rows} embedding rows")
    return {"tensors": len(tensors), "bytes": size}


def planned_bytes(plan: list[PlannedTensor]) -> int:
    """The tensor bytes a plan writes (with GGUF's 32-byte alignment), not counting the header: a
    slight underestimate of the file, so a check of free space against it never refuses a file that fits."""
    return sum((_nbytes_and_store_shape(p.shape, p.qtype)[2] + 31) & ~31 for p in plan)


def write_gguf_pair(ck: Checkpoint, lm_path: Path, mmproj_path: Path, precision: str,
                    mmproj_precision: str | None = None) -> dict[str, Any]:
    """Write and validate both files (to the given temp paths). Returns per-file info."""
    info = {}
    kv, plan = plan_lm(ck, precision)
    write_file(lm_path, "phi2", kv, plan, f"LM {precision}")
    info["model"] = validate(lm_path, "phi2", REQUIRED_LM_KEYS, plan)
    kv, plan = plan_mmproj(ck, mmproj_precision or precision)
    write_file(mmproj_path, "clip", kv, plan, "mmproj")
    info["mmproj"] = validate(mmproj_path, "clip", REQUIRED_MMPROJ_KEYS, plan)
    if any(p.name == "v.post_ln.weight" for p in plan):
        raise ExportError("internal: v.post_ln must not be written")
    return info
