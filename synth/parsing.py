"""Parse the tagged responses the prompts ask for; anything doubtful is rejected with a reason.

Models wrap output in code fences, change tag case, add chatter around the tags, or write the
chosen question's text instead of its number; those are accepted. What is not accepted: a
response cut off by the token limit, an unclosed or missing tag, an empty field, a refusal (an
explicit ``<refuse>`` or an untagged apology). A rejected response is still journaled (it was
paid for) and lands in the rejects file with the reason, never in the dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MIN_CAPTION_CHARS = 20
MIN_ANSWER_CHARS = 1  # "B" is a valid answer to a multiple-choice instruction

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*$", re.M)
_REFUSAL_TEXT = re.compile(
    r"^\s*(i['’]m sorry|i am sorry|sorry,|i can(?:not|['’]t) (?:help|assist|provide|describe|answer|comply)"
    r"|i (?:won['’]t|will not) (?:help|describe|answer)|as an ai)",
    re.I,
)


class Rejected(Exception):
    """The response cannot be used; ``reason`` starts with a category: refused, truncated, malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Parsed:
    caption: str | None = None
    questions: list[str] = field(default_factory=list)
    chosen: int | None = None  # 0-based index into questions
    answer: str = ""

    @property
    def question(self) -> str | None:
        return self.questions[self.chosen] if self.chosen is not None else None


def _tag(text: str, name: str, required: bool = True) -> str | None:
    m = re.search(rf"<\s*{name}\s*>(.*?)<\s*/\s*{name}\s*>", text, re.S | re.I)
    if m:
        return m.group(1).strip()
    if re.search(rf"<\s*{name}\s*>", text, re.I):
        raise Rejected(f"truncated: <{name}> is never closed")
    if required:
        raise Rejected(f"malformed: missing <{name}>")
    return None


def _clean(value: str, name: str, min_chars: int) -> str:
    if re.search(r"<\s*/?\s*(caption|questions|q|chosen|answer|refuse)\s*>", value, re.I):
        raise Rejected(f"malformed: stray tag inside <{name}>")
    if len(value) < min_chars:
        raise Rejected(f"malformed: <{name}> is empty or too short")
    return value


def _chosen_index(raw: str, questions: list[str]) -> int:
    m = re.search(r"\d+", raw)
    if m:
        n = int(m.group())
        if 1 <= n <= len(questions):
            return n - 1
        raise Rejected(f"malformed: <chosen> is {n}, not between 1 and {len(questions)}")
    norm = " ".join(raw.lower().split())
    for i, q in enumerate(questions):
        if norm and (norm in " ".join(q.lower().split()) or " ".join(q.lower().split()) in norm):
            return i
    raise Rejected("malformed: <chosen> names no question")


def parse_response(mode: str, text: str | None, finish_reason: str | None = "stop") -> Parsed:
    """Fields for ``mode`` (laion: caption, questions, chosen, answer; vflan: caption, answer; text: answer)."""
    if finish_reason == "length":
        raise Rejected("truncated: the response hit the token limit (raise --max-tokens)")
    if finish_reason == "content_filter":
        raise Rejected("refused: the provider's content filter stopped the response")
    if not text or not text.strip():
        raise Rejected("malformed: empty response")
    text = _FENCE.sub("", text)
    refusal = re.search(r"<\s*refuse\s*>(.*?)(?:<\s*/\s*refuse\s*>|$)", text, re.S | re.I)
    if refusal:
        raise Rejected(f"refused: {' '.join(refusal.group(1).split())[:300] or 'no reason given'}")
    if _REFUSAL_TEXT.search(text) and not re.search(r"<\s*answer\s*>", text, re.I):
        raise Rejected(f"refused: {' '.join(text.split())[:300]}")
    out = Parsed()
    if mode in ("laion", "vflan"):
        out.caption = _clean(_tag(text, "caption"), "caption", MIN_CAPTION_CHARS)
    if mode == "laion":
        block = _tag(text, "questions")
        qs = [" ".join(q.split()) for q in re.findall(r"<\s*q\s*>(.*?)<\s*/\s*q\s*>", block, re.S | re.I)]
        qs = [q for q in qs if q]
        if not qs:  # tolerate "1. ...\n2. ..." lists
            qs = [re.sub(r"^\s*\d+[.)]\s*", "", ln).strip() for ln in block.splitlines() if ln.strip()]
        if not qs:
            raise Rejected("malformed: <questions> holds no question")
        out.questions = [_clean(q, "q", 5) for q in qs]
        raw = _tag(text, "chosen", required=len(qs) > 1)
        out.chosen = 0 if raw is None else _chosen_index(raw, out.questions)
    out.answer = _clean(_tag(text, "answer"), "answer", MIN_ANSWER_CHARS)
    return out
