"""The PyTorch programs the CoreML packages are converted from, and their greedy generate loop.

Why these shapes (FORMATS.md, CoreML): coremltools has no LLaVA path and lacks the ops transformers'
mask builder and LLaVA's image merge use, so the model becomes separate programs and the merge
happens outside, as in the ONNX export:

  vision            pixel_values [1, 3, S, S] -> image_features [1, n_image_tokens, lm_hidden]
  embed_tokens      input_ids [1, T] -> inputs_embeds [1, T, lm_hidden]
  language_model    inputs_embeds [1, T, H], causal_mask [1, 1, T, P+T] -> logits [1, T, vocab]
                    (or hidden_states for all but the last chunk), with the key/value cache held
                    as CoreML states (fp16 buffers written in place: ``ct.StateType``, iOS 18)

One language-model program serves prefill and decode: the query length T and the mask's key length
P+T are flexible, and the past length P is read from them, so the caller's mask is the only
bookkeeping (Apple's stateful-LLM recipe). A large model is cut into chunks of layers, one stateful
program each, so that no conversion holds the whole graph.

The decoder layer is written out here from the Hugging Face modules (layer norms, projections, MLP,
rotary tables) rather than called, because the cache must be an in-place buffer update that
coremltools turns into state writes. Rotary cos/sin come from fixed tables indexed by position
(computing ``position * inv_freq`` in fp16 would lose whole radians beyond a few hundred tokens).
Attention scores and softmax are meant to run in fp32 (Phi-2's fp16 attention overflows); the
converter keeps those ops in fp32 (export/to_coreml.py).

``torch_programs`` runs these modules eagerly behind allava.coreml_layout's ``Programs``: the same
greedy loop then drives them, the reference MIL evaluator and CoreML's predict on macOS, so the
three are compared on identical calls.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LlavaForConditionalGeneration

from allava.coreml_layout import Programs
from export.onnx_graphs import EmbedTokens as EmbedProgram  # input_ids -> inputs_embeds, shared with ONNX


class VisionProgram(torch.nn.Module):
    """pixel_values [1, 3, S, S] -> projected image features (feature layer, CLS drop, projector).

    Holds only the vision tower and the projector: a traced module carries every parameter of its
    submodules into the converter, and the language model must not ride along (at full size it is
    5 GB of bf16 the converter cannot even read)."""

    def __init__(self, model: LlavaForConditionalGeneration) -> None:
        super().__init__()
        cfg = model.config
        if not isinstance(cfg.vision_feature_layer, int):
            raise ValueError(f"vision_feature_layer {cfg.vision_feature_layer!r}: one layer index is converted")
        if cfg.vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy {cfg.vision_feature_select_strategy!r} is not converted")
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector
        self.layer = cfg.vision_feature_layer
        self.drop_cls = cfg.vision_feature_select_strategy == "default"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values, output_hidden_states=True).hidden_states[self.layer]
        return self.projector(hidden[:, 1:] if self.drop_cls else hidden)


class LanguageModelChunk(torch.nn.Module):
    """Phi decoder layers [first, last) with their key/value cache as in-place fp16 buffers.

    ``key_cache`` / ``value_cache``: [n_layers_in_chunk, 1, n_kv_heads, max_context, head_dim]. The
    first chunk takes inputs_embeds, the last adds the final norm and the LM head."""

    def __init__(self, model: LlavaForConditionalGeneration, first: int, last: int, max_context: int) -> None:
        super().__init__()
        lm = model.model.language_model
        tc = model.config.text_config
        self.layers = torch.nn.ModuleList(lm.layers[first:last])
        self.is_last = last == tc.num_hidden_layers
        self.final_layernorm = lm.final_layernorm if self.is_last else None
        self.lm_head = model.lm_head if self.is_last else None
        self.n_heads = tc.num_attention_heads
        self.n_kv = tc.num_key_value_heads or self.n_heads
        self.head_dim = tc.hidden_size // self.n_heads
        self.rot = self.layers[0].self_attn.rotary_ndims
        self.scaling = self.head_dim ** -0.5
        cos, sin = rope_tables(tc, self.head_dim, max_context)
        self.register_buffer("rope_cos", cos, persistent=False)  # [max_context, rot]
        self.register_buffer("rope_sin", sin, persistent=False)
        shape = (last - first, 1, self.n_kv, max_context, self.head_dim)
        self.register_buffer("key_cache", torch.zeros(shape, dtype=torch.float16))
        self.register_buffer("value_cache", torch.zeros(shape, dtype=torch.float16))

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        rot, keep = x[..., : self.rot], x[..., self.rot:]
        half = self.rot // 2
        rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
        return torch.cat((rot * cos + rotated * sin, keep), dim=-1)

    def forward(self, hidden_states: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        q_len = hidden_states.shape[1]
        end = causal_mask.shape[-1]
        past = end - q_len
        cos = self.rope_cos[past:end][None, None]  # [1, 1, T, rot]
        sin = self.rope_sin[past:end][None, None]
        h = hidden_states
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(1, q_len, self.n_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(1, q_len, self.n_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(1, q_len, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            self.key_cache[i:i + 1, :, :, past:end, :] = k.to(torch.float16)[None]  # same rank: no traced reshape
            self.value_cache[i:i + 1, :, :, past:end, :] = v.to(torch.float16)[None]
            keys = self.key_cache[i:i + 1, :, :, :end, :][0].float()  # [1, n_kv, P+T, D]
            values = self.value_cache[i:i + 1, :, :, :end, :][0].float()
            if self.n_kv != self.n_heads:
                keys = keys.repeat_interleave(self.n_heads // self.n_kv, dim=1)
                values = values.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            scores = torch.matmul(q.float() * self.scaling, keys.transpose(-1, -2)) + causal_mask.float()
            probs = torch.softmax(scores, dim=-1)
            out = torch.matmul(probs, values).to(x.dtype).transpose(1, 2).reshape(1, q_len, -1)
            h = h + attn.dense(out) + layer.mlp(x)
        if self.is_last:
            assert self.final_layernorm is not None and self.lm_head is not None
            h = self.lm_head(self.final_layernorm(h))
        return h


def rope_tables(text_config: object, head_dim: int, max_context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [max_context, rotary_dim] of Phi's default (unscaled) rotary embedding, computed in float64.

    Computed here from the config rather than by the model's rotary module: a bf16 checkpoint loads
    its inverse frequencies in bf16, which would shift every position's angle."""
    rope = dict(getattr(text_config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_type {rope.get('rope_type')!r}: only Phi's default rotary embedding is converted")
    factor = float(rope.get("partial_rotary_factor", getattr(text_config, "partial_rotary_factor", 1.0)))
    theta = float(rope.get("rope_theta", getattr(text_config, "rope_theta", 10000.0)))
    dim = int(head_dim * factor)
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    freqs = torch.outer(torch.arange(max_context, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().float().contiguous(), emb.sin().float().contiguous()


def chunk_bounds(n_layers: int, chunk_layers: int) -> list[tuple[int, int]]:
    """[(first, last), ...] covering all layers in chunks of at most ``chunk_layers``."""
    step = max(1, min(chunk_layers, n_layers))
    return [(a, min(a + step, n_layers)) for a in range(0, n_layers, step)]


def torch_programs(model: LlavaForConditionalGeneration, chunk_layers: int, max_context: int) -> Programs:
    """The wrapper modules run eagerly in PyTorch: what is converted, checked against HF generate."""
    vision, embed = VisionProgram(model).eval(), EmbedProgram(model).eval()
    chunks = [LanguageModelChunk(model, a, b, max_context).eval()
              for a, b in chunk_bounds(model.config.text_config.num_hidden_layers, chunk_layers)]

    def run_lm(embeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
        h = torch.from_numpy(np.asarray(embeds, dtype=np.float32))
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
        with torch.no_grad():
            for c in chunks:
                h = c(h, m)
        return h.numpy()

    def reset() -> None:
        for c in chunks:
            c.key_cache.zero_()
            c.value_cache.zero_()

    def run_vision(px: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return vision(torch.from_numpy(np.asarray(px, dtype=np.float32))).numpy()

    def run_embed(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return embed(torch.from_numpy(np.asarray(ids)).long()).numpy()

    return Programs(run_vision, run_embed, run_lm, reset)
