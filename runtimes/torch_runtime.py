"""The PyTorch reference runtime: plain `LlavaForConditionalGeneration.from_pretrained` + `AutoProcessor`.

Why a hand-written greedy loop instead of `model.generate`: it times image encode, prefill and
decode separately (the same split llama.cpp reports) and returns the same token ids generate would
with `do_sample=False`. The image goes through transformers' own path (`get_image_features`, then
the forward's `mm_encoder_outputs` splice: allava.modeling), so nothing of the model is re-implemented.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from allava.formats import REFERENCE
from allava.modeling import image_encoder_outputs, image_features
from runtimes.base import IMAGE_MARKER, GenerationResult, Runtime, Timings, VariantError, peak_rss_mb


def _cache_of(out):
    return out["cache"] if "cache" in out else out["past_key_values"]


class TorchRuntime(Runtime):
    """transformers in PyTorch; float32 by default because it is the reference every delta is
    measured against. A subclass (or ``dtype=``) serves transformers folders that only load in
    half precision, such as GPTQ checkpoints."""

    format = REFERENCE
    default_dtype = "float32"

    device = torch.device("cpu")

    def _from_pretrained(self) -> torch.nn.Module:
        """The model, in ``self.dtype`` on ``self.device``; a subclass adds its loading options here."""
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration.from_pretrained(self.variant, dtype=self.dtype)

    def load(self, variant_path: str | Path, threads: int | None = None, dtype: str | None = None) -> TorchRuntime:
        from transformers import AutoProcessor

        t0 = time.perf_counter()
        if threads:
            torch.set_num_threads(threads)
        self.variant = Path(variant_path)
        self.dtype = getattr(torch, dtype or self.default_dtype)
        if not (self.variant / "config.json").is_file():
            raise VariantError(f"{self.variant}: no config.json; not a Hugging Face model folder")
        try:
            self.model = self._from_pretrained().eval()
            self.processor = AutoProcessor.from_pretrained(self.variant)
        except Exception as exc:  # noqa: BLE001 - truncated/missing weights, bad config: the variant is unusable
            raise VariantError(f"{self.variant}: transformers could not load it: {type(exc).__name__}: {exc}") from exc
        self.tokenizer = self.processor.tokenizer
        self.image_token_id = self.model.config.image_token_id
        self.eos_id = self.tokenizer.eos_token_id
        # transformers >= 5.24 renamed past_key_values -> cache; accept both
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.load_s = time.perf_counter() - t0
        return self

    def _inputs(self, image: Image.Image | None, prompt: str) -> dict[str, torch.Tensor]:
        if image is None:
            enc = self.tokenizer(prompt.replace(IMAGE_MARKER, ""), return_tensors="pt")
        else:
            enc = self.processor(images=image.convert("RGB"), text=prompt, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def _ids(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], device=self.device)

    @torch.inference_mode()
    def _encode(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, object], float]:
        """Forward arguments for the prompt: the ids plus the projected image features (timed apart,
        as llama.cpp reports image encoding), which the model's forward splices in itself."""
        kw: dict[str, object] = {"input_ids": inputs["input_ids"]}
        t_img = 0.0
        if "pixel_values" in inputs:
            t0 = time.perf_counter()
            feats = image_features(self.model, inputs["pixel_values"].to(self.dtype))
            t_img = time.perf_counter() - t0
            kw["mm_encoder_outputs"] = image_encoder_outputs(feats)
        return kw, t_img

    @torch.inference_mode()
    def image_embeddings(self, image: Image.Image) -> np.ndarray:
        pv = self.processor.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]
        feats = image_features(self.model, pv.to(self.device, self.dtype))
        return feats.reshape(-1, feats.shape[-1]).float().cpu().numpy()

    @torch.inference_mode()
    def generate(self, image: Image.Image | None, prompt: str, max_new_tokens: int = 32,
                 greedy: bool = True, ignore_eos: bool = False) -> GenerationResult:
        if not greedy:
            raise NotImplementedError("only greedy decoding is implemented (parity and accuracy use it)")
        t_start = time.perf_counter()
        kw, t_img = self._encode(self._inputs(image, prompt))
        n_prompt = kw["input_ids"].shape[1]  # type: ignore[union-attr]
        t0 = time.perf_counter()
        out = self.model(**kw, use_cache=True)
        t_prefill = time.perf_counter() - t0
        past = _cache_of(out)
        tok = int(out.logits[0, -1].argmax())
        ttft = time.perf_counter() - t_start
        ids = [tok]
        t1 = time.perf_counter()
        while len(ids) < max_new_tokens and (ignore_eos or tok != self.eos_id):
            out = self.model(input_ids=self._ids([tok]), use_cache=True, **{self._cache_kw: past})
            past = _cache_of(out)
            tok = int(out.logits[0, -1].argmax())
            ids.append(tok)
        t_dec = time.perf_counter() - t1
        text = self.tokenizer.decode([i for i in ids if i != self.eos_id], skip_special_tokens=True)
        tm = Timings(load_s=self.load_s, image_encode_ms=t_img * 1e3, ttft_ms=ttft * 1e3,
                     prefill_tok_s=n_prompt / t_prefill if t_prefill else 0.0,
                     decode_tok_s=(len(ids) - 1) / t_dec if t_dec and len(ids) > 1 else 0.0,
                     peak_rss_mb=peak_rss_mb(), n_prompt_tokens=n_prompt, n_generated=len(ids))
        return GenerationResult(text, ids, tm)

    @torch.inference_mode()
    def score(self, image: Image.Image | None, prompt: str, continuation_ids: list[int]) -> np.ndarray:
        """Prompt prefill with the image, then the continuation against the cache, as generation runs it.

        Why two calls: a continuation token may be the image token's id (an untrained model emits
        anything), and in one forward the model would take it for an image placeholder."""
        kw, _ = self._encode(self._inputs(image, prompt))
        out = self.model(**kw, use_cache=True)
        rows = [out.logits[0, -1:]]
        if len(continuation_ids) > 1:
            rest = self.model(input_ids=self._ids(continuation_ids[:-1]), use_cache=True,
                              **{self._cache_kw: _cache_of(out)})
            rows.append(rest.logits[0])
        return torch.cat(rows).float().cpu().numpy()

    def prompt_token_ids(self, prompt: str, image: bool = True) -> list[int]:
        return self._inputs(Image.new("RGB", (8, 8)) if image else None, prompt)["input_ids"][0].cpu().tolist()
