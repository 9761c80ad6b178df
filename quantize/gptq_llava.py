"""Teach GPTQModel the LLaVA-Phi layout: which layers to quantize and how calibration reaches them.

Why our own model definition: GPTQModel (7.x) has no definition for transformers' ``llava`` model
type with a Phi language model (its Llava-family definitions assume Llama/Qwen layer names, and an
unknown type falls back to guessing). This one names the Phi decoder layers under
``model.language_model.layers``, so exactly the language model's linear layers are quantized; the
vision tower, the projector, the embeddings and ``lm_head`` stay dense.

Calibration goes through the whole LLaVA forward (GPTQModel captures the first decoder layer's
inputs from ``model(**sample)``), so samples carrying ``pixel_values`` put the projected image
features at the image-token positions: the language model is calibrated on what it sees at run time.
"""

from __future__ import annotations

from typing import Any

GPTQ_MODEL_TYPE = "llava"


def register() -> type:
    """Register the definition for model type ``llava``; returns the class. Idempotent."""
    from gptqmodel.models import auto
    from gptqmodel.models.base import BaseQModel
    from transformers import AutoModelForImageTextToText

    existing = auto.MODEL_MAP.get(GPTQ_MODEL_TYPE)
    if existing is not None and getattr(existing, "_allava", False):
        return existing

    class LlavaPhiQModel(BaseQModel):
        _allava = True
        loader = AutoModelForImageTextToText
        pre_lm_head_norm_module = "model.language_model.final_layernorm"
        # Phi's block is parallel: attention and MLP both read input_layernorm's output, so q/k/v and
        # fc1 see the same inputs (one group, 0); dense and fc2 follow (group 1).
        module_tree = [
            "model", "language_model", "layers", "#",
            {
                "input_layernorm": ("input_layernorm:!",),
                "self_attn": ("q_proj:0", "k_proj:0", "v_proj:0", "dense:1"),
                "mlp": ("fc1:0", "fc2:1"),
            },
        ]

        def prepare_dataset(self, calibration_dataset: list[dict[str, Any]], batch_size: int = 1,
                            **_: Any) -> list[dict[str, Any]]:
            """Samples arrive as processor outputs (input_ids, attention_mask and, for multimodal
            calibration, pixel_values); GPTQModel's own preparation would drop pixel_values."""
            return list(calibration_dataset)

    auto.MODEL_MAP[GPTQ_MODEL_TYPE] = LlavaPhiQModel
    if GPTQ_MODEL_TYPE not in auto.SUPPORTED_MODELS:
        auto.SUPPORTED_MODELS.append(GPTQ_MODEL_TYPE)
    return LlavaPhiQModel
