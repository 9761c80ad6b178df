"""Versioned prompt files (``synth/prompts/<mode>_v<N>.txt``) and the chat messages built from them.

Prompts are data, not code: a record's ``prompt_id`` names the exact file text that produced it,
so a changed prompt must be a new file (laion_v2.txt), never an edit. A file has ``#`` comment
lines, then ``=== system ===`` and ``=== user ===`` sections; ``{instruction}`` is the only
placeholder, replaced literally (so braces elsewhere in a prompt are safe).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
DEFAULT_PROMPTS = {"laion": "laion_v1", "vflan": "vflan_v1", "text": "text_v1"}
CAPTION_REQUESTS = "caption_requests_v1"

_SECTION = re.compile(r"^===\s*(system|user)\s*===\s*$", re.M)


class PromptError(Exception):
    pass


@dataclass(frozen=True)
class Prompt:
    id: str
    system: str
    user: str

    def messages(self, instruction: str | None = None, image_url: str | None = None) -> list[dict[str, Any]]:
        """Chat-completions messages: system text, then the user text with the image attached."""
        user = self.user.replace("{instruction}", instruction or "")
        content: Any = user
        if image_url is not None:
            content = [{"type": "text", "text": user}, {"type": "image_url", "image_url": {"url": image_url}}]
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content}]


def load_prompt(name_or_path: str) -> Prompt:
    """Load ``laion_v1`` (from synth/prompts/) or a path to a prompt file; the id is the file stem."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPT_DIR / f"{name_or_path}.txt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROMPT_DIR.glob("*_v*.txt")))
        raise PromptError(f"prompt {name_or_path!r} not found (known: {known})")
    text = path.read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if not sections.get("system") or not sections.get("user"):
        raise PromptError(f"prompt file {path} needs '=== system ===' and '=== user ===' sections")
    return Prompt(path.stem, sections["system"], sections["user"])


def caption_requests() -> list[str]:
    lines = (PROMPT_DIR / f"{CAPTION_REQUESTS}.txt").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def caption_request_for(key: str, choices: list[str]) -> str:
    """Deterministic per key, so an interrupted and an uninterrupted run write the same records."""
    return choices[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(choices)]
