"""Images to base64 data URLs, resized to a maximum side.

Data URLs work with every OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama) without
hosting the files; resizing first bounds request size and vision-token cost (OpenAI bills by
512 px tile, so a 4000 px photo sent as-is costs several times a 1024 px one for no gain).
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

from PIL import Image, ImageOps


def data_url(path: Path, max_side: int, quality: int = 90) -> str:
    """JPEG data URL of the image, EXIF-rotated and fitted within ``max_side`` x ``max_side``."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def fitted_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def vision_tokens(width: int, height: int) -> int:
    """OpenAI's high-detail estimate: fit in 2048, short side to 768, then 85 + 170 per 512 px tile."""
    s = min(1.0, 2048 / max(width, height, 1))
    w, h = width * s, height * s
    s = min(1.0, 768 / max(min(w, h), 1))
    w, h = w * s, h * s
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)
