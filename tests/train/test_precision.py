"""``precision: auto`` picks bf16 only where the hardware computes in it."""

from __future__ import annotations

import pytest
import torch

from train import trainer


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert trainer.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert trainer.autocast_dtype("auto", cpu) is expected


def test_explicit_precisions_pass_through_and_bad_ones_are_named():
    cpu = torch.device("cpu")
    assert trainer.autocast_dtype("bf16", cpu) is torch.bfloat16
    assert trainer.autocast_dtype("fp32", cpu) is None
    with pytest.raises(ValueError, match="needs CUDA"):
        trainer.autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="auto, bf16, fp16 or fp32"):
        trainer.autocast_dtype("fp8", cpu)


def test_native_bf16_probe_answers_a_bool():
    assert isinstance(trainer.cpu_has_native_bf16(), bool)
