"""The frozen vision tower's features, computed once per stage instead of once per step.

Why: ALLaVA freezes the vision tower, so every image's projector input (the LLaVA feature layer,
CLS dropped) is the same at every step. The training step otherwise runs the tower on every image
of every batch. With the cache, a step runs the (trainable) projector on the cached features and
hands them to the model's forward as ``mm_encoder_outputs``, where transformers splices them into
the ``<image>`` positions exactly as it does with pixels (``tests/train/test_training.py`` checks
that the loss and gradients match the pixel path). The features come from transformers' own
``get_image_features`` (allava.modeling.projector_inputs), so the layer choice is never ours.

For single-process runs (the CPU default); DDP and DeepSpeed keep the pixel path, where the model
call is wrapped by the engine.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from allava.modeling import image_encoder_outputs, projector_inputs


@torch.no_grad()
def vision_features(
    model, pixel_values: torch.Tensor, amp_dtype: torch.dtype | None, batch_size: int = 256, progress: bool = True
) -> torch.Tensor:
    """(n_images, n_image_tokens, d) projector inputs, as ``get_image_features`` selects them."""
    tower = model.model.vision_tower
    device = next(tower.parameters()).device
    was_training = tower.training
    tower.eval()
    chunks = []
    for start in tqdm(range(0, pixel_values.shape[0], batch_size), desc="data: caching vision features",
                      disable=not progress, leave=False):
        pixels = pixel_values[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            chunks.append(projector_inputs(model, pixels).float().cpu())
    tower.train(was_training)
    return torch.cat(chunks)


def encoder_outputs_from_features(model, image_features: torch.Tensor) -> dict:
    """The forward's ``mm_encoder_outputs`` for cached features: the projector runs here, in the graph."""
    return image_encoder_outputs(model.model.multi_modal_projector(image_features))
