"""Offline teacher: an in-process backend that answers from the scene the built-in world drew.

It has the HTTP backend's interface and returns text in the same tagged format the prompts ask
for, so the default main job exercises the real path (scheduling, journal, parsing, writer)
without a network or a key. It reads ``allava.world.teacher``:

* ``describe_image(image_path) -> {"caption", "questions", "chosen", "answer"}`` (``chosen`` is a
  0-based index into ``questions``; raises KeyError for an image the world did not draw),
* ``answer_instruction(image_path, instruction) -> {"caption", "answer"}``,
* ``answer_text(question) -> str``.

Token counts are estimates (4 characters per token) and cost nothing in the price table.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from synth.client import ChatRequest, ChatResult, RequestFailed

MODEL_NAME = "offline-teacher"
TEACHER_MODULE = "allava.world.teacher"


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _prompt_chars(messages: list[dict[str, Any]]) -> int:
    n = 0
    for m in messages:
        c = m["content"]
        n += len(c) if isinstance(c, str) else sum(len(p.get("text", "")) for p in c)
    return n


def format_laion(d: dict[str, Any]) -> str:
    qs = "\n".join(f"<q>{q}</q>" for q in d["questions"])
    return (
        f"<caption>{d['caption']}</caption>\n<questions>\n{qs}\n</questions>\n"
        f"<chosen>{int(d['chosen']) + 1}</chosen>\n<answer>{d['answer']}</answer>"
    )


class OfflineTeacher:
    """Backend answering from ``allava.world.teacher`` (or any module with the same three functions)."""

    def __init__(self, module: ModuleType | None = None) -> None:
        self.name = MODEL_NAME
        self._module = module

    @property
    def module(self) -> ModuleType:
        if self._module is None:
            try:
                self._module = importlib.import_module(TEACHER_MODULE)
            except ImportError as exc:
                from synth.client import FatalError

                raise FatalError(f"the offline teacher needs {TEACHER_MODULE} ({exc})") from None
        return self._module

    async def complete(self, request: ChatRequest) -> ChatResult:
        item, t = request.item, self.module
        try:
            if request.mode == "laion":
                text = format_laion(t.describe_image(item.image_path))
            elif request.mode == "vflan":
                d = t.answer_instruction(item.image_path, item.instruction)
                text = f"<caption>{d['caption']}</caption>\n<answer>{d['answer']}</answer>"
            else:
                text = f"<answer>{t.answer_text(item.instruction)}</answer>"
        except KeyError as exc:
            raise RequestFailed(f"offline teacher: no scene for this input ({exc})") from None
        return ChatResult(text, "stop", _tokens("x" * _prompt_chars(request.messages)) + 85, _tokens(text), MODEL_NAME)

    async def aclose(self) -> None:
        return None
