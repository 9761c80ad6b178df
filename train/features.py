"""The frozen vision tower's features, computed once per stage instead of once per step.

Why: ALLaVA freezes the vision tower, so every image's selected features (the LLaVA feature layer,
CLS dropped) are the same at every step. The training step otherwise runs the tower on every
image of every batch, and transformers' tower also computes the layers above the feature layer
that LLaVA throws away. With the cache, a step embeds the tokens, runs the (trainable) projector
on the cached features and scatters them into the ``<image>`` positions, which is what
``LlavaModel.forward`` does with pixels (``tests/train/test_features.py`` checks the loss and
gradients match the pixel path).

For single-process runs (the CPU default); DDP and DeepSpeed keep the pixel path, where the model
call is wrapped by the engine.
"""

from __future__ import annotations

import torch
from tqdm import tqdm


@torch.no_grad()
def vision_features(
    model, pixel_values: torch.Tensor, amp_dtype: torch.dtype | None, batch_size: int = 256, progress: bool = True
) -> torch.Tensor:
    """(n_images, n_image_tokens, d) pre-projector features, as ``get_image_features`` selects them."""
    config = model.config
    layers = config.vision_feature_layer
    layers = [layers] if isinstance(layers, int) else list(layers)
    tower = model.model.vision_tower
    device = next(tower.parameters()).device
    was_training = tower.training
    tower.eval()
    chunks = []
    for start in tqdm(range(0, pixel_values.shape[0], batch_size), desc="data: caching vision features",
                      disable=not progress, leave=False):
        pixels = pixel_values[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            hidden = tower(pixels, output_hidden_states=True, return_dict=True).hidden_states
        picked = [hidden[k] for k in layers]
        if config.vision_feature_select_strategy == "default":
            picked = [h[:, 1:] for h in picked]
        chunks.append(torch.cat(picked, dim=-1).float().cpu())
    tower.train(was_training)
    return torch.cat(chunks)


def embed_with_features(model, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
    """Token embeddings with the projected image features in the ``<image>`` positions."""
    embeds = model.get_input_embeddings()(input_ids)
    projected = model.model.multi_modal_projector(image_features)
    mask = (input_ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
    if int(mask.sum()) != projected.numel():
        raise ValueError(
            f"batch has {int(mask[..., 0].sum())} image tokens but {projected.shape[0]} x {projected.shape[1]} "
            "cached image features"
        )
    return embeds.masked_scatter(mask, projected.to(embeds.dtype))
