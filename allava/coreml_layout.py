"""The layout of a CoreML variant folder and the one greedy loop over its programs.

Shared by the stages that write (export/to_coreml.py) and run (runtimes/coreml_runtime.py) it,
so they agree on file, input, output and state names without importing each other.

A variant folder holds three kinds of ML program packages (FORMATS.md: coremltools cannot convert
LLaVA's merge or transformers' mask builder, so the merge happens outside, as in the ONNX export):

  vision.mlpackage                    pixel_values [1, 3, S, S] -> image_features [1, N, H]
  embed_tokens.mlpackage              input_ids [1, T] int32 -> inputs_embeds [1, T, H]
  language_model[_NN].mlpackage       inputs_embeds (or hidden_states) [1, T, H], causal_mask [1, 1, T, P+T]
                                      -> logits [1, T, V] (hidden_states_out for all chunks but the
                                      last, fed to the next chunk's hidden_states);
                                      states key_cache / value_cache, fp16, written in place

plus the tokenizer, processor and chat template files, the config and the manifest. One language
program serves prefill and decode: T and P+T are flexible and the past length P is read from the
mask, so the caller's mask is the only bookkeeping (Apple's stateful-LLM recipe, iOS 18).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

FORMAT = "coreml"
VISION_PACKAGE = "vision.mlpackage"
EMBED_PACKAGE = "embed_tokens.mlpackage"
LM_STEM = "language_model"
STATES = ("key_cache", "value_cache")
MASK_MIN = -1e4  # the additive mask's "blocked" value: finite in fp16 (finfo.min sums overflow to -inf)
DEFAULT_MAX_CONTEXT = 2048  # Phi-2's context; the cache buffers are this long


def lm_package(chunk: int, n_chunks: int) -> str:
    """language_model.mlpackage, or language_model_00.mlpackage ... when the LM is chunked."""
    return f"{LM_STEM}.mlpackage" if n_chunks == 1 else f"{LM_STEM}_{chunk:02d}.mlpackage"


def lm_input_name(chunk: int) -> str:
    return "inputs_embeds" if chunk == 0 else "hidden_states"


def lm_output_name(chunk: int, n_chunks: int) -> str:
    # not "hidden_states": a program's input and output cannot share a name
    return "logits" if chunk == n_chunks - 1 else "hidden_states_out"


def causal_mask(past: int, q_len: int, dtype: type = np.float16) -> np.ndarray:
    """The additive mask [1, 1, T, P+T] a caller passes: query i sees keys 0..P+i."""
    cols = np.arange(past + q_len)[None, :]
    rows = np.arange(q_len)[:, None] + past
    return np.where(cols <= rows, 0.0, MASK_MIN).astype(dtype)[None, None]


@dataclass
class Programs:
    """One implementation of the programs, numpy in and out (the PyTorch wrappers they are converted
    from, the reference MIL evaluator, CoreML's predict on macOS).

    ``language_model`` runs every chunk in order on (inputs_embeds, mask) and returns logits, keeping
    the cache in its states; ``reset`` starts a new sequence with fresh states."""

    vision: Callable[[np.ndarray], np.ndarray]
    embed: Callable[[np.ndarray], np.ndarray]
    language_model: Callable[[np.ndarray, np.ndarray], np.ndarray]
    reset: Callable[[], None]


def splice(embeds: np.ndarray, ids: Sequence[int], image_token_id: int, features: np.ndarray | None) -> np.ndarray:
    """LLaVA's merge, done outside the programs: the image-token rows take the image features in order."""
    if features is None:
        return embeds
    rows = [i for i, t in enumerate(ids) if t == image_token_id]
    feats = features.reshape(-1, features.shape[-1])
    if len(rows) != feats.shape[0]:
        raise ValueError(f"the prompt has {len(rows)} image tokens, the vision program gave {feats.shape[0]} features")
    out = np.array(embeds, copy=True)
    out[0, rows] = feats.astype(out.dtype)
    return out


@dataclass
class Greedy:
    tokens: list[int]  # generated ids, the end-of-sequence id included when produced
    first_logits: np.ndarray  # the prefill's last-position logits (float32), for logit-error figures
    image_s: float = 0.0  # the vision program
    prefill_s: float = 0.0  # vision + embed + prefill + first token
    decode_s: float = 0.0


def generate_greedy(programs: Programs, ids: Sequence[int], pixel_values: np.ndarray | None, image_token_id: int,
                    max_new_tokens: int, eos_token_id: int | None, max_context: int,
                    ignore_eos: bool = False) -> Greedy:
    """Greedy decoding through the programs, the same calls whichever implementation runs them."""
    import time

    t0 = time.perf_counter()
    programs.reset()
    ids = list(ids)
    if len(ids) >= max_context:
        raise ValueError(f"prompt of {len(ids)} tokens does not fit the package's context of {max_context}")
    max_new_tokens = min(max_new_tokens, max_context - len(ids))
    t_image, features = 0.0, None
    if pixel_values is not None:
        tv = time.perf_counter()
        features = programs.vision(pixel_values)
        t_image = time.perf_counter() - tv
    embeds = splice(programs.embed(np.asarray([ids], dtype=np.int32)), ids, image_token_id, features)
    last = np.asarray(programs.language_model(embeds, causal_mask(0, len(ids)))[0, -1], dtype=np.float32)
    first = last
    t1 = time.perf_counter()
    out: list[int] = []
    for step in range(max_new_tokens):
        tok = int(np.argmax(last))
        out.append(tok)
        if (tok == eos_token_id and not ignore_eos) or step == max_new_tokens - 1:
            break
        e = programs.embed(np.asarray([[tok]], dtype=np.int32))
        last = np.asarray(programs.language_model(e, causal_mask(len(ids) + len(out) - 1, 1))[0, -1], dtype=np.float32)
    return Greedy(out, first, t_image, t1 - t0, time.perf_counter() - t1)
