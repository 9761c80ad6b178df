"""A random-weight LLaVA-Phi HF folder from a preset: for tests and benchmarks before training exists.

Why: export, quantize and parity are about faithfully moving weights, not about what the weights say,
so a seeded random model of the right shape exercises every code path in seconds.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "USER: What colour is the circle?\nASSISTANT: The circle is red.",
    "a small blue square is left of a large green triangle on a grey background",
    "How many shapes are there? Answer the question using a single word or phrase.",
    "the yellow circle is above the purple square and below the orange triangle",
    "Describe the image. There are three shapes: a white circle, a black square and a red triangle.",
]


def make_random_checkpoint(out: str | Path, preset: str = "tiny", seed: int = 0, vocab_size: int = 1024) -> Path:
    """Build, save (model + processor + tokenizer) and return `out`."""
    from allava.modeling import build_model, build_processor, load_preset
    from allava.tokenizer import train_bpe_tokenizer

    out = Path(out)
    tok = train_bpe_tokenizer(CORPUS * 40, vocab_size)
    p = load_preset(preset)
    model = build_model(p, tok, random_init=True, seed=seed)
    proc = build_processor(p, tok)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out
