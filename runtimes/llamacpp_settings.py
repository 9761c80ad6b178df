"""The llama.cpp runtime's engine settings: what it asks of llama.cpp and libmtmd at load.

Why a table of named settings rather than constants in the runtime: each one trades memory, speed
and (for flash attention) numerics, so the bench must be able to set it per device profile (a
profile's ``engine.gguf`` object) or per run (``bench/run.py --engine gguf.KEY=VALUE``) and record
the values it ran with beside the figures they produced (results.json ``engine_settings``).

Defaults are the measured best for one image question on CPU (docs/experiments.md §11):
* ``n_ubatch`` 1024: an ALLaVA image chunk is 576 positions; at 512 llama.cpp splits it in two
  micro-batches, each a separate pass over every weight. One pass per chunk is faster.
* ``flash_attn`` / ``clip_flash_attn`` "auto": llama.cpp turns flash attention on where the backend
  supports it (the CPU backend does), which fuses softmax(QK)V and skips the K^T copies.
* ``repack`` true: ggml repacks Q4_0/Q4_K/IQ4_NL weights at load into the layout its CPU GEMM
  kernels stream best ("extra buffer types"); off keeps only the mapped file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


class EngineSettingsError(ValueError):
    """An engine setting with an unknown name or a value of the wrong kind; the message names both."""


@dataclass(frozen=True)
class LlamaCppSettings:
    n_ctx: int | None = None  # context positions; None: the model's training context, at most 4096
    n_batch: int | None = None  # logical batch; None: n_ubatch
    n_ubatch: int = 1024  # physical batch (one graph pass); an image chunk fits in one
    flash_attn: str = "auto"  # language model: auto | on | off
    clip_flash_attn: str = "auto"  # libmtmd's CLIP encoder: auto | on | off
    repack: bool = True  # ggml's repacked CPU weight layouts (use_extra_bufts)

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
            elif key == "repack":
                if not isinstance(value, bool):
                    raise EngineSettingsError(f"{where}: {key} must be true or false, not {value!r}")
            elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise EngineSettingsError(f"{where}: {key} must be a positive integer, not {value!r}")
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
