"""What a folder's safetensors hold, from their headers alone (no tensor is read, torch not needed).

Why here: the bench sizes a checkpoint's language model for its memory estimate and the GPTQ
quantizer records the language model's bytes for the roofline; both need the same header walk and
the same rule for which tensors belong to the language model.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def is_language_model(key: str) -> bool:
    """A tensor of the language model (decoder, embeddings, lm_head), in any LLaVA key layout."""
    return "language_model" in key or key.startswith("lm_head")


def tensor_entries(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, header entry: dtype, shape, data_offsets) of every tensor in the folder's safetensors."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                yield key, meta
