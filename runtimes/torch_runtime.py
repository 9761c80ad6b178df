"""The PyTorch reference runtime: plain `LlavaForConditionalGeneration.from_pretrained` + `AutoProcessor`.

Why a hand-written greedy loop instead of `model.generate`: it times image encode, prefill and
decode separately (the same split llama.cpp reports) and returns the same token ids generate would
with `do_sample=False`.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from runtimes.base import IMAGE_MARKER, GenerationResult, Runtime, Timings, peak_rss_mb


def _cache_of(out):
    return out["cache"] if "cache" in out else out["past_key_values"]


class TorchRuntime(Runtime):
    format = "pytorch"

    def load(self, variant_path: str | Path, threads: int | None = None) -> TorchRuntime:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        t0 = time.perf_counter()
        if threads:
            torch.set_num_threads(threads)
        self.variant = Path(variant_path)
        self.model = LlavaForConditionalGeneration.from_pretrained(self.variant, dtype=torch.float32).eval()
        self.processor = AutoProcessor.from_pretrained(self.variant)
        self.tokenizer = self.processor.tokenizer
        self.image_token_id = self.model.config.image_token_id
        self.eos_id = self.tokenizer.eos_token_id
        # transformers >= 5.2x renamed past_key_values -> cache; accept both
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.load_s = time.perf_counter() - t0
        return self

    def _inputs(self, image: Image.Image | None, prompt: str) -> dict[str, torch.Tensor]:
        if image is None:
            return dict(self.tokenizer(prompt.replace(IMAGE_MARKER, ""), return_tensors="pt"))
        return dict(self.processor(images=image.convert("RGB"), text=prompt, return_tensors="pt"))

    @torch.inference_mode()
    def _embeds(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        ids = inputs["input_ids"]
        embeds = self.model.get_input_embeddings()(ids)
        t_img = 0.0
        if "pixel_values" in inputs:
            t0 = time.perf_counter()
            feats = self._image_features(inputs["pixel_values"])
            t_img = time.perf_counter() - t0
            mask = (ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
            embeds = embeds.masked_scatter(mask, feats.to(embeds.dtype))
        return embeds, t_img

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.model.get_image_features(pixel_values=pixel_values)
        if hasattr(feats, "pooler_output"):  # transformers 5 returns a model output
            feats = feats.pooler_output
        if isinstance(feats, (list, tuple)):
            feats = torch.cat(list(feats), dim=0)
        return feats.reshape(-1, feats.shape[-1])

    @torch.inference_mode()
    def image_embeddings(self, image: Image.Image) -> np.ndarray:
        pv = self.processor.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]
        return self._image_features(pv).float().numpy()

    @torch.inference_mode()
    def generate(self, image: Image.Image | None, prompt: str, max_new_tokens: int = 32,
                 greedy: bool = True, ignore_eos: bool = False) -> GenerationResult:
        if not greedy:
            raise NotImplementedError("only greedy decoding is implemented (parity and accuracy use it)")
        t_start = time.perf_counter()
        inputs = self._inputs(image, prompt)
        embeds, t_img = self._embeds(inputs)
        n_prompt = embeds.shape[1]
        t0 = time.perf_counter()
        out = self.model(inputs_embeds=embeds, use_cache=True)
        t_prefill = time.perf_counter() - t0
        past = _cache_of(out)
        tok = int(out.logits[0, -1].argmax())
        ttft = time.perf_counter() - t_start
        ids = [tok]
        t1 = time.perf_counter()
        while len(ids) < max_new_tokens and (ignore_eos or tok != self.eos_id):
            out = self.model(input_ids=torch.tensor([[tok]]), use_cache=True, **{self._cache_kw: past})
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
        inputs = self._inputs(image, prompt)
        embeds, _ = self._embeds(inputs)
        n = len(continuation_ids)
        if n > 1:
            cont = self.model.get_input_embeddings()(torch.tensor([continuation_ids[:-1]]))
            embeds = torch.cat([embeds, cont], dim=1)
        logits = self.model(inputs_embeds=embeds).logits[0]
        return logits[-n:].float().numpy()

    def prompt_token_ids(self, prompt: str, image: bool = True) -> list[int]:
        return self._inputs(Image.new("RGB", (8, 8)) if image else None, prompt)["input_ids"][0].tolist()
