"""CoreML runtimes: the packages of export/to_coreml.py behind the common interface.

``CoreMLRuntime`` runs them with CoreML itself (coremltools' ``predict`` with a state per
language-model package), which exists only on macOS; the format table says so, and elsewhere the
bench and export/check.py report "not runnable here: needs macOS".

``CoreMLReferenceRuntime`` is the format's stand-in on other hosts: the same loop over the same
packages, each executed by the reference MIL evaluator (runtimes/coreml_mil.py). It gives the
packages' answers (parity, held-out accuracy) and never latency: its speed is numpy's, not a
phone's. Both share the loop of allava.coreml_layout (embed, splice image features, prefill with a
causal mask over an empty cache, then one token at a time), as a Swift app would run it
(export/README.md).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from allava.coreml_layout import (
    EMBED_PACKAGE,
    VISION_PACKAGE,
    Programs,
    causal_mask,
    generate_greedy,
    lm_input_name,
    splice,
)
from allava.preprocess import ImagePreprocessor, PromptTokenizer
from allava.variant import Manifest
from runtimes.base import IMAGE_MARKER, GenerationResult, Runtime, Timings, VariantError, peak_rss_mb

logging.getLogger("coremltools").setLevel(logging.ERROR)


def _lm_packages(vdir: Path, man: Manifest) -> list[str]:
    names = man.extra.get("lm_packages") or [man.files.get("model")]
    missing = [n for n in [man.files.get("vision"), man.files.get("embed_tokens"), *names] if not n or not (vdir / n).is_dir()]
    if missing:
        raise VariantError(f"{vdir}: package(s) {', '.join(map(str, missing))} listed in the manifest are missing")
    return list(names)


def mil_programs(folder: Path, lm_packages: list[str], vision: str = VISION_PACKAGE, embed: str = EMBED_PACKAGE) -> Programs:
    """The packages as Programs executed by the reference MIL evaluator (states kept between calls)."""
    from runtimes.coreml_mil import MilProgram

    v, e = MilProgram(folder / vision), MilProgram(folder / embed)
    chunks = [MilProgram(folder / name) for name in lm_packages]

    def run_lm(embeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
        h = embeds
        for i, c in enumerate(chunks):
            h = next(iter(c.run({lm_input_name(i): h, "causal_mask": mask}).values()))
        return h

    def reset() -> None:
        for c in chunks:
            c.reset()

    return Programs(lambda px: v.run({"pixel_values": px})["image_features"],
                    lambda ids: e.run({"input_ids": ids})["inputs_embeds"], run_lm, reset)


def predict_programs(folder: Path, lm_packages: list[str], compute_units: str = "ALL") -> Programs:
    """The packages run by CoreML (macOS): one state per language-model package, fresh per sequence."""
    import coremltools as ct

    units = getattr(ct.ComputeUnit, compute_units)
    v = ct.models.MLModel(str(folder / VISION_PACKAGE), compute_units=units)
    e = ct.models.MLModel(str(folder / EMBED_PACKAGE), compute_units=units)
    chunks = [ct.models.MLModel(str(folder / name), compute_units=units) for name in lm_packages]
    states = [c.make_state() for c in chunks]

    def run_lm(embeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
        h = embeds.astype(np.float16)
        for i, (c, s) in enumerate(zip(chunks, states, strict=True)):
            h = next(iter(c.predict({lm_input_name(i): h, "causal_mask": mask.astype(np.float16)}, state=s).values()))
        return np.asarray(h)

    def reset() -> None:
        states[:] = [c.make_state() for c in chunks]

    return Programs(lambda px: v.predict({"pixel_values": px.astype(np.float16)})["image_features"],
                    lambda ids: e.predict({"input_ids": ids.astype(np.int32)})["inputs_embeds"], run_lm, reset)


class _CoreMLLoop(Runtime):
    """Tokenize, preprocess and drive a variant's Programs; subclasses say who executes them."""

    format = "coreml"
    executor = ""

    def _programs(self, vdir: Path, packages: list[str]) -> Programs:
        raise NotImplementedError

    def load(self, variant_path: str | Path, threads: int | None = None) -> _CoreMLLoop:
        t0 = time.perf_counter()
        self.variant = vdir = Path(variant_path)
        man = Manifest.read(vdir)
        if man.format != "coreml":
            raise VariantError(f"{vdir}: a {man.format} variant, not CoreML")
        packages = _lm_packages(vdir, man)
        try:
            self.tok = PromptTokenizer.from_folder(vdir)
            self.pre = ImagePreprocessor.from_folder(vdir)
        except (OSError, ValueError, KeyError) as exc:
            raise VariantError(f"{vdir}: processor or tokenizer files unusable ({exc})") from exc
        self.max_context = int(man.extra.get("max_context", 0)) or 2048
        try:
            self.programs = self._programs(vdir, packages)
        except Exception as exc:  # noqa: BLE001 - the protobuf and weight readers raise their own types
            raise VariantError(f"{vdir}: a package could not be read ({type(exc).__name__}: {str(exc)[:300]}); "
                               "expected the ML program packages of export/to_coreml.py") from exc
        self.load_s = time.perf_counter() - t0
        return self

    @classmethod
    def build_info(cls) -> dict[str, Any]:
        from importlib.metadata import version

        return {"executor": cls.executor, "coremltools": version("coremltools")}

    def _inputs(self, image: Image.Image | None, prompt: str) -> tuple[list[int], np.ndarray | None]:
        if image is not None and prompt.count(IMAGE_MARKER) != 1:
            raise ValueError(f"prompt must hold exactly one {IMAGE_MARKER} marker")
        return self.tok.encode(prompt, with_image=image is not None), self.pre(image) if image is not None else None

    def generate(self, image: Image.Image | None, prompt: str, max_new_tokens: int = 32,
                 greedy: bool = True, ignore_eos: bool = False) -> GenerationResult:
        if not greedy:
            raise NotImplementedError("only greedy decoding is implemented (parity and accuracy use it)")
        ids, px = self._inputs(image, prompt)
        g = generate_greedy(self.programs, ids, px, self.tok.image_token_id, max_new_tokens, self.tok.eos_token_id,
                            self.max_context, ignore_eos)
        prefill = g.prefill_s - g.image_s
        timings = Timings(load_s=self.load_s, image_encode_ms=g.image_s * 1e3, ttft_ms=g.prefill_s * 1e3,
                          prefill_tok_s=len(ids) / prefill if prefill > 0 else 0.0,
                          decode_tok_s=(len(g.tokens) - 1) / g.decode_s if g.decode_s and len(g.tokens) > 1 else 0.0,
                          peak_rss_mb=peak_rss_mb(), n_prompt_tokens=len(ids), n_generated=len(g.tokens))
        return GenerationResult(self.tok.decode(g.tokens), g.tokens, timings)

    def score(self, image: Image.Image | None, prompt: str, continuation_ids: list[int]) -> np.ndarray:
        """One prefill over prompt + continuation[:-1]; the rows from the prompt's last position on."""
        ids, px = self._inputs(image, prompt)
        seq = ids + list(continuation_ids[:-1])
        p = self.programs
        p.reset()
        feats = p.vision(px) if px is not None else None
        embeds = splice(p.embed(np.asarray([seq], dtype=np.int32)), seq, self.tok.image_token_id, feats)
        logits = p.language_model(embeds, causal_mask(0, len(seq)))
        return np.asarray(logits[0, len(ids) - 1:], dtype=np.float32)

    def image_embeddings(self, image: Image.Image) -> np.ndarray:
        feats = np.asarray(self.programs.vision(self.pre(image)))
        return feats.reshape(-1, feats.shape[-1]).astype(np.float32)


class CoreMLRuntime(_CoreMLLoop):
    """CoreML's own execution (macOS 15 / iOS 18 runtime), compute units ALL (Neural Engine when it can)."""

    executor = "CoreML predict (macOS)"

    def _programs(self, vdir: Path, packages: list[str]) -> Programs:
        return predict_programs(vdir, packages)


class CoreMLReferenceRuntime(_CoreMLLoop):
    """The packages' programs executed op by op in numpy (runtimes/coreml_mil.py): answers, not speed."""

    executor = "reference MIL evaluator (numpy)"

    def _programs(self, vdir: Path, packages: list[str]) -> Programs:
        return mil_programs(vdir, packages)
