"""allava/preprocess.py gives the HF processor's pixel values and input ids without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allava.chat import prompt_text
from allava.preprocess import ImagePreprocessor, PromptTokenizer

SIZES = [(96, 96), (128, 128), (200, 80), (50, 170), (333, 97), (97, 97), (1, 5)]


@pytest.mark.parametrize("size", SIZES)
def test_pixels_and_ids_equal_the_hf_processor(tiny_ckpt: Path, size: tuple[int, int]):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_ckpt)
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    prompt = prompt_text("What colour is the circle?")
    ref = proc(images=image, text=prompt, return_tensors="np")
    pixels = ImagePreprocessor.from_folder(tiny_ckpt)(image)
    assert pixels.shape == ref["pixel_values"].shape and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, ref["pixel_values"], atol=1e-6)  # float rounding of the normalisation only
    tok = PromptTokenizer.from_folder(tiny_ckpt)
    assert tok.encode(prompt) == ref["input_ids"][0].tolist()
    assert tok.encode(prompt, with_image=False) == proc.tokenizer(prompt.replace("<image>", ""))["input_ids"]
    assert tok.eos_token_id == proc.tokenizer.eos_token_id


def test_no_torch_is_imported(tiny_ckpt: Path):
    """The point of the module: an edge runtime's process stays free of torch and transformers."""
    code = ("import sys; from PIL import Image; from allava.preprocess import ImagePreprocessor, PromptTokenizer; "
            f"ImagePreprocessor.from_folder({str(tiny_ckpt)!r})(Image.new('RGB', (64, 40))); "
            f"PromptTokenizer.from_folder({str(tiny_ckpt)!r}).encode('USER: <image>\\nhi\\nASSISTANT:'); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
