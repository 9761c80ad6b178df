"""One runtime interface for every export format.

Why one interface: the parity check, the bench and the report treat every format alike; a new
format adds one class and one entry in the format table (allava/formats.py), nothing else.
The PyTorch runtime (runtimes/torch_runtime.py) is the reference for every parity delta.

Only ``load`` and ``generate`` are required. ``score`` (teacher-forced logits),
``image_embeddings`` (projector output), ``perf_counters`` (the engine's own timers) and
``build_info`` (which build of the engine is loaded) are capabilities: a runtime has one when it
overrides the method, and callers ask ``runtime.supports(name)`` before using it, so a format whose
engine exposes less (e.g. CoreML's predict) still plugs in.

A prompt is the full chat prompt text as `allava.chat.prompt_text(question)` renders it; it holds
one `<image>` marker where the image goes. Images are PIL images; compare runtimes on images at the
model's native size (llama.cpp pads/resizes differently than the HF processor).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from allava.memory import peak_rss_mb
from allava.schema import IMAGE_MARKER

__all__ = ["CAPABILITIES", "IMAGE_MARKER", "GenerationResult", "NotSupportedError", "Runtime", "Timings",
           "VariantError", "peak_rss_mb"]
CAPABILITIES = ("score", "image_embeddings", "perf_counters", "build_info")


class VariantError(RuntimeError):
    """A variant's files cannot be loaded; the message names the file and what is wrong with it."""


class NotSupportedError(NotImplementedError):
    """The runtime lacks an optional capability (check ``Runtime.supports`` first)."""


@dataclass
class Timings:
    load_s: float = 0.0
    image_encode_ms: float = 0.0
    ttft_ms: float = 0.0  # image encode + prompt prefill + first token
    prefill_tok_s: float = 0.0  # prompt tokens (image tokens included) per second of LM prefill
    decode_tok_s: float = 0.0  # generated tokens per second after the first
    peak_rss_mb: float = 0.0  # this process's peak RSS (peak_rss_mb()) at the end of the call
    n_prompt_tokens: int = 0
    n_generated: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids, the end-of-sequence id included when it was produced
    timings: Timings = field(default_factory=Timings)


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

    @classmethod
    def supports(cls, capability: str) -> bool:
        """Whether this runtime implements an optional capability (one of CAPABILITIES): derived
        from whether a subclass overrides the method, so it cannot disagree with the code."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
        owner = next(k for k in cls.__mro__ if capability in k.__dict__)
        return owner is not Runtime

    def _unsupported(self, capability: str) -> NotSupportedError:
        return NotSupportedError(f"the {self.format or type(self).__name__} runtime has no {capability!r} capability")

    def score(self, image: Image.Image | None, prompt: str, continuation_ids: list[int]) -> np.ndarray:
        """Teacher-forced logits [len(continuation_ids), vocab]: row i predicts continuation_ids[i]."""
        raise self._unsupported("score")

    def image_embeddings(self, image: Image.Image) -> np.ndarray:
        """Projector output [n_image_tokens, lm_hidden] as fed to the language model."""
        raise self._unsupported("image_embeddings")

    def perf_counters(self) -> dict[str, float]:
        """The engine's own timers since the last reset: t_p_eval_ms, n_p_eval (prefill), t_eval_ms,
        n_eval (single-token decode steps). The bench divides by them for its overhead ratio."""
        raise self._unsupported("perf_counters")

    def reset_perf_counters(self) -> None:
        raise self._unsupported("perf_counters")

    @classmethod
    def build_info(cls) -> dict[str, Any]:
        """Version and build facts of the engine this process loads (e.g. which patches it carries)."""
        raise NotSupportedError(f"{cls.__name__} has no 'build_info' capability")

    def first_token_logits(self, image: Image.Image | None, prompt: str) -> np.ndarray:
        return self.score(image, prompt, [0])[0]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free native resources early (also done on garbage collection)."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
