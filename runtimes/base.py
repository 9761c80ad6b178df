"""One runtime interface for every export format.

Why one interface: the parity check, the bench and the report treat every format alike; a new
format adds one class here and one registry entry (runtimes/__init__.py), nothing else.
The PyTorch runtime (runtimes/torch_runtime.py) is the reference for every parity delta.

A prompt is the full chat prompt text as `allava.chat.prompt_text(question)` renders it; it holds
one `<image>` marker where the image goes. Images are PIL images; compare runtimes on images at the
model's native size (llama.cpp pads/resizes differently than the HF processor).
"""

from __future__ import annotations

import resource
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_MARKER = "<image>"


@dataclass
class Timings:
    load_s: float = 0.0
    image_encode_ms: float = 0.0
    ttft_ms: float = 0.0  # image encode + prompt prefill + first token
    prefill_tok_s: float = 0.0  # prompt tokens (image tokens included) per second of LM prefill
    decode_tok_s: float = 0.0  # generated tokens per second after the first
    peak_rss_mb: float = 0.0  # process peak RSS (ru_maxrss) at the end of the call
    n_prompt_tokens: int = 0
    n_generated: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids, the end-of-sequence id included when it was produced
    timings: Timings = field(default_factory=Timings)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Runtime(ABC):
    """load(variant, threads) once, then generate / score / image_embeddings as often as needed."""

    format: str = ""

    def __init__(self) -> None:
        self.load_s = 0.0
        self.variant: Path | None = None

    @abstractmethod
    def load(self, variant_path: str | Path, threads: int | None = None) -> Runtime:
        """Load a variant folder (or HF folder for PyTorch); returns self."""

    @abstractmethod
    def generate(self, image: Image.Image | None, prompt: str, max_new_tokens: int = 32,
                 greedy: bool = True, ignore_eos: bool = False) -> GenerationResult:
        """Generate until end of sequence or max_new_tokens; greedy is the only mode parity uses.

        ``ignore_eos`` generates exactly max_new_tokens (context permitting), as llama-bench does:
        latency figures then cover the same number of decode steps whatever the model answers.
        """

    @abstractmethod
    def score(self, image: Image.Image | None, prompt: str, continuation_ids: list[int]) -> np.ndarray:
        """Teacher-forced logits [len(continuation_ids), vocab]: row i predicts continuation_ids[i]."""

    @abstractmethod
    def image_embeddings(self, image: Image.Image) -> np.ndarray:
        """Projector output [n_image_tokens, lm_hidden] as fed to the language model."""

    def first_token_logits(self, image: Image.Image | None, prompt: str) -> np.ndarray:
        return self.score(image, prompt, [0])[0]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free native resources early (also done on garbage collection)."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
