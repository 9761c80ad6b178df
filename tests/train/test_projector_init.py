"""The projector starts from the stage-0 heads with every attribute at equal variance."""

import pytest
import torch
from torch import nn
from transformers import LlavaConfig
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from train.vision_pretrain import init_projector_from_heads


def _projector(hidden: int = 64) -> nn.Module:
    cfg = LlavaConfig(vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "num_attention_heads": 4},
                      text_config={"model_type": "phi", "hidden_size": hidden, "num_attention_heads": 4}, projector_hidden_act="gelu")
    return LlavaMultiModalProjector(cfg)


def test_each_head_gets_equal_variance_and_free_units_start_at_zero():
    torch.manual_seed(0)
    feats = torch.randn(2000, 32) * torch.linspace(0.1, 5.0, 32)  # very unequal feature scales
    heads = nn.ModuleDict({"colour": nn.Linear(32, 7), "size": nn.Linear(32, 3), "cell": nn.Linear(32, 9)})
    proj = _projector()
    used = init_projector_from_heads(proj, heads, feats)
    assert used == {"colour": 7, "size": 3, "cell": 9}
    pre = proj.linear_1(feats)
    start = 0
    for name, n in used.items():
        block = pre[:, start:start + n]
        assert block.mean(0).abs().max() < 1e-4, name  # centred
        assert block.var(0).sum().item() == pytest.approx(1.0, rel=1e-3), name  # one unit of variance per head
        # the block is the head's logits up to a per-unit affine map: same argmax class per patch
        logits = heads[name](feats)
        std = logits.std(0)
        assert torch.equal((block * std * n ** 0.5).argmax(1), (logits - logits.mean(0)).argmax(1))
        start += n
    assert proj.linear_1.weight[start:].abs().sum() == 0 and proj.linear_1.bias[start:].abs().sum() == 0


def test_too_many_head_outputs_is_a_clear_error():
    heads = nn.ModuleDict({"name": nn.Linear(32, 100)})
    with pytest.raises(ValueError, match="projector hidden size 64 < 100"):
        init_projector_from_heads(_projector(), heads, torch.randn(50, 32))
