"""The llama.cpp runtime's engine settings: what it asks of llama.cpp and libmtmd at load.

Why a table of named settings rather than constants in the runtime: each one trades memory, speed
and (for flash attention) numerics, so the bench must be able to set it per device profile (a
profile's ``engine.gguf`` object) or per run (``bench/run.py --engine gguf.KEY=VALUE``) and record
the values it ran with beside the figures they produced (results.json ``engine_settings``).

Defaults are the measured best for one image question on CPU (docs/experiments.md §11):
* ``n_ubatch`` 512 (llama.cpp's own): 1024, which takes an ALLaVA image chunk (576 positions) in one
  pass, measured no faster at full size and needs a larger compute buffer.
* ``flash_attn`` / ``clip_flash_attn`` "auto" (on for the CPU backend): prefill of an image prompt
  +13-28% and CLIP encode ~15% faster; it costs ~25-30% of decode speed at a 600-token context (the
  CPU kernel walks the cache one row at a time for a single query). Time to first token wins.
* ``repack`` "auto": on for Q4_0 (ggml's 8x8 repacked GEMM: prefill 49 vs 33 tok/s, decode faster
  too), off for the K-quant mixes (Q4_K_M prefill 80 vs 51 tok/s without the repacked Q4_K layout,
  decode 8 vs 9 tok/s); true/false force it.
* ``n_ctx`` None: sized to the need of the run (docs/memory.md). The context starts at
  ``ctx_floor`` positions and grows, in steps of 256, to the largest request seen (image tokens +
  prompt + max new tokens), never past the model's training context: an image question on
  ALLaVA-3B needs ~650-1,000 positions, and every position of an f16 cache costs 320 KiB on Phi-2.
  An integer fixes it (what a phone app that must never re-allocate would do).
* ``mmap`` "auto": off when a quantized model is repacked, on otherwise (float weights: nothing to repack). A repacked tensor is a copy in
  anonymous memory, and the mapped file pages it was read from stay resident beside it (Q4_0 at
  full size: 3,878 MiB peak, ~1.5 GiB counted twice; docs/memory.md); read() into the buffers
  leaves them in the page cache only. Unrepacked weights are used in place from the mapping.
* ``type_k`` / ``type_v``: the KV cache's element type (llama.cpp's --cache-type-k/-v). f16 by
  default; q8_0 halves the cache (a quantized V needs flash attention, which "auto" gives on CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
# llama.cpp's --cache-type-k/-v names -> ggml_type ids (ggml.h)
KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}
CTX_STEP = 256  # positions the automatic context grows by (llama.cpp pads the cache to 256 anyway)


class EngineSettingsError(ValueError):
    """An engine setting with an unknown name or a value of the wrong kind; the message names both."""


@dataclass(frozen=True)
class LlamaCppSettings:
    n_ctx: int | None = None  # context positions; None: the model's training context, at most 4096
    n_batch: int | None = None  # logical batch; None: n_ubatch
    n_ubatch: int = 512  # physical batch (one graph pass)
    flash_attn: str = "auto"  # language model: auto | on | off
    clip_flash_attn: str = "auto"  # libmtmd's CLIP encoder: auto | on | off
    repack: bool | str = "auto"  # ggml's repacked CPU weight layouts (use_extra_bufts): auto | true | false
    mmap: bool | str = "auto"  # memory-map the GGUF (use_mmap): auto (off when repacking) | true | false
    type_k: str = "f16"  # KV cache key type (KV_TYPES)
    type_v: str = "f16"  # KV cache value type; quantized needs flash attention
    ctx_floor: int = 256  # the automatic context's first size, before any request asked for more

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "gguf engine settings") -> LlamaCppSettings:
        """Settings from a profile/CLI mapping; unknown keys and wrong types raise naming the key."""
        data = dict(data or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise EngineSettingsError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
        for key, value in data.items():
            if key in ("flash_attn", "clip_flash_attn"):
                if value not in FLASH_ATTN:
                    raise EngineSettingsError(f"{where}: {key} must be one of {sorted(FLASH_ATTN)}, not {value!r}")
            elif key in ("type_k", "type_v"):
                if value not in KV_TYPES:
                    raise EngineSettingsError(f"{where}: {key} must be one of {sorted(KV_TYPES)}, not {value!r}")
            elif key in ("repack", "mmap"):
                if not isinstance(value, bool) and value != "auto":
                    raise EngineSettingsError(f"{where}: {key} must be true, false or \"auto\", not {value!r}")
            elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise EngineSettingsError(f"{where}: {key} must be a positive integer, not {value!r}")
        return cls(**data)

    def repack_for(self, lm_precision: str) -> bool:
        """Whether to repack a language model of this precision ("Q4_K_M", "Q4_0-VQ8_0", ...)."""
        if isinstance(self.repack, bool):
            return self.repack
        return "_K" not in lm_precision.upper()  # measured: the K-quant mixes prefill faster unpacked

    def mmap_for(self, repack: bool, lm_precision: str = "Q") -> bool:
        """Whether to memory-map the language model, given whether its weights are repacked."""
        if isinstance(self.mmap, bool):
            return self.mmap
        return not (repack and lm_precision.upper().startswith(("Q", "IQ")))

    def auto_ctx(self, need: int, current: int, limit: int) -> int:
        """The automatic context for a request of ``need`` positions: ``current`` when it fits, else
        ``need`` rounded up to CTX_STEP, at most ``limit`` (the model's training context)."""
        if need <= current:
            return current
        return min(limit, -(-need // CTX_STEP) * CTX_STEP)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
