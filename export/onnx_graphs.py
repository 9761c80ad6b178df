"""The three ONNX graphs of a LLaVA export, as the transformers.js / onnx-community LLaVA folders have them.

Why three graphs and not one: a single merged LLaVA graph cannot reuse its KV cache between
calls (the image splice sits in front of the cache), so generation needs the vision encoder, the
token embedding and a decoder that takes ``inputs_embeds`` and the past keys/values, one graph
for both the prefill (past length 0) and the decode steps. Inputs and outputs are named once
here, the way transformers.js and onnxruntime-genai expect them.

Each wrapper calls the model's own modules: the vision graph is ``allava.modeling.image_features``
(transformers' ``get_image_features``: feature layer, CLS drop and projector as the config says);
the decoder is the Phi model's forward with a cache seeded from the past inputs. Only the 4-D
causal mask is built here, from plain tensor ops, because the exporter cannot trace transformers'
mask builder over a dynamic past length. Attention is the eager implementation (what the ONNX
exporters trace reliably); the export runs in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache, LlavaForConditionalGeneration

from allava.modeling import image_features
from allava.onnx_decoder_io import rewrite_decoder_file
from allava.onnx_layout import rename_external_data

VISION, EMBED, DECODER = "vision_encoder", "embed_tokens", "decoder_model_merged"
OPSET = 18


class VisionEncoder(torch.nn.Module):
    """pixel_values [1, 3, H, W] -> image_features [1, n_image_tokens, lm_hidden]."""

    def __init__(self, model: LlavaForConditionalGeneration) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return image_features(self.model, pixel_values)


class EmbedTokens(torch.nn.Module):
    """input_ids [batch, seq] -> inputs_embeds [batch, seq, lm_hidden]."""

    def __init__(self, model: LlavaForConditionalGeneration) -> None:
        super().__init__()
        self.embed = model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class Decoder(torch.nn.Module):
    """(inputs_embeds, attention_mask, position_ids, past k/v per layer) -> (logits, present k/v per layer)."""

    def __init__(self, model: LlavaForConditionalGeneration) -> None:
        super().__init__()
        self.lm = model.model.language_model
        self.head = model.lm_head
        self.text_config = model.config.text_config

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = DynamicCache(config=self.text_config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.lm(inputs_embeds=inputs_embeds, attention_mask=causal_mask(inputs_embeds, attention_mask),
                      position_ids=position_ids, cache=cache, use_cache=True)
        presents = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        return (self.head(out.last_hidden_state), *presents)


def causal_mask(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Additive [batch, 1, q, past + q] mask: a query sees every earlier key the 2-D mask keeps."""
    q, total = inputs_embeds.shape[1], attention_mask.shape[1]
    rows = torch.arange(q, device=inputs_embeds.device).unsqueeze(1)
    cols = torch.arange(total, device=inputs_embeds.device).unsqueeze(0)
    allowed = (cols <= rows + (total - q))[None, None] & attention_mask.bool()[:, None, None, :]
    zero = torch.zeros((), dtype=inputs_embeds.dtype)
    return torch.where(allowed, zero, torch.full((), torch.finfo(inputs_embeds.dtype).min, dtype=inputs_embeds.dtype))


@dataclass(frozen=True)
class DecoderShape:
    n_layers: int
    n_kv_heads: int
    head_dim: int
    hidden: int

    @classmethod
    def of(cls, model: LlavaForConditionalGeneration) -> DecoderShape:
        tc = model.config.text_config
        heads = tc.num_attention_heads
        return cls(tc.num_hidden_layers, tc.num_key_value_heads or heads, tc.hidden_size // heads, tc.hidden_size)

    def past_names(self) -> list[str]:
        return [f"past_key_values.{i}.{kv}" for i in range(self.n_layers) for kv in ("key", "value")]

    def present_names(self) -> list[str]:
        return [f"present.{i}.{kv}" for i in range(self.n_layers) for kv in ("key", "value")]


def load_for_export(checkpoint: str | Path) -> LlavaForConditionalGeneration:
    """The checkpoint in float32 with eager attention (SDPA does not trace into every exporter)."""
    return LlavaForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32,
                                                         attn_implementation="eager").eval()


def export_graph(name: str, model: LlavaForConditionalGeneration, path: Path, external_data: bool) -> None:
    """Write one of the three graphs to ``path`` with torch.onnx's dynamo exporter, dynamic batch and lengths."""
    cfg = model.config
    batch = torch.export.Dim("batch_size", max=256)
    with torch.no_grad():
        if name == VISION:
            size = cfg.vision_config.image_size
            module: torch.nn.Module = VisionEncoder(model)
            # One image per call: get_image_features returns a per-image list, which fixes the batch
            # at export; LLaVA-1.5 prompts (and transformers.js) hold one image.
            args: tuple = (torch.zeros(1, 3, size, size),)
            inputs, outputs = ["pixel_values"], ["image_features"]
            dynamic: tuple | None = None
        elif name == EMBED:
            module = EmbedTokens(model)
            args = (torch.zeros(1, 4, dtype=torch.int64),)
            inputs, outputs = ["input_ids"], ["inputs_embeds"]
            dynamic = ({0: batch, 1: torch.export.Dim("sequence_length", max=65536)},)
        elif name == DECODER:
            shape = DecoderShape.of(model)
            module = Decoder(model)
            seq = torch.export.Dim("sequence_length", max=65536)
            past_len = torch.export.Dim("past_sequence_length", max=65536)
            total = torch.export.Dim("total_sequence_length", max=65536)
            p, q = 3, 5  # example lengths; both are dynamic in the graph (the prefill runs with past length 0)
            past = [torch.zeros(1, shape.n_kv_heads, p, shape.head_dim) for _ in range(2 * shape.n_layers)]
            args = (torch.zeros(1, q, shape.hidden), torch.ones(1, p + q, dtype=torch.int64),
                    torch.arange(p, p + q).unsqueeze(0), *past)
            inputs = ["inputs_embeds", "attention_mask", "position_ids", *shape.past_names()]
            outputs = ["logits", *shape.present_names()]
            dynamic = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq},
                       tuple({0: batch, 2: past_len} for _ in past))
        else:
            raise ValueError(f"unknown graph {name!r}")
        program = torch.onnx.export(module.eval(), args, input_names=inputs, output_names=outputs, dynamo=True,
                                    dynamic_shapes=dynamic, opset_version=OPSET, external_data=external_data,
                                    verbose=False)
    program.save(str(path), external_data=external_data)
    if external_data:
        rename_external_data(path)
    if name == DECODER:  # num_logits_to_keep, as transformers.js feeds it (allava/onnx_decoder_io.py)
        rewrite_decoder_file(path)
