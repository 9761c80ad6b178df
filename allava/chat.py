"""The one chat format, used for training masks, inference and every export.

Phi-2 based ALLaVA uses a Vicuna-style ``USER: ... ASSISTANT: ...<|endoftext|>`` layout. The same
text lives in three places that must agree: the Jinja ``chat_template`` stored with the tokenizer
(read by transformers, llama.cpp and transformers.js), :func:`render_segments` (used to build
label masks), and :func:`prompt_text` (single-turn inference). Tests check they render the same
string and that per-segment tokenisation equals whole-string tokenisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from allava.schema import GPT, IMAGE_MARKER, Turn

EOS = "<|endoftext|>"
USER_TAG = "USER:"
ASSISTANT_TAG = "ASSISTANT:"
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."

# Assistant text starts with a space after "ASSISTANT:" so that the generation prompt ends at a
# pre-tokeniser boundary: prompt tokens are identical whether or not the answer follows.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' }}{%- endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{ '<|endoftext|>' }}{%- endif -%}"
    "{{ '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


@dataclass(frozen=True)
class Segment:
    text: str
    trainable: bool  # True for assistant replies (loss is computed), False for prompts


def render_segments(turns: Sequence[Turn], system: str | None = None) -> list[Segment]:
    """Split a conversation into prompt / reply segments, exactly as CHAT_TEMPLATE renders it."""
    segments: list[Segment] = []
    if system:
        segments.append(Segment(f"{system}\n", False))
    for turn in turns:
        if turn.role == GPT:
            segments.append(Segment(f" {turn.value}{EOS}", True))
            segments.append(Segment("\n", False))
        else:
            segments.append(Segment(f"{USER_TAG} {turn.value}\n{ASSISTANT_TAG}", False))
    return segments


def to_messages(turns: Sequence[Turn], system: str | None = None) -> list[dict[str, object]]:
    """Convert ALLaVA turns to the role/content messages that ``apply_chat_template`` takes."""
    messages: list[dict[str, object]] = []
    if system:
        messages.append({"role": "system", "content": system})
    for turn in turns:
        messages.append({"role": "assistant" if turn.role == GPT else "user", "content": turn.value})
    return messages


def prompt_text(question: str, with_image: bool = True) -> str:
    """The single-turn generation prompt: what every runtime feeds the model."""
    marker = f"{IMAGE_MARKER}\n" if with_image and IMAGE_MARKER not in question else ""
    return f"{USER_TAG} {marker}{question}\n{ASSISTANT_TAG}"


def short_answer_prompt(question: str) -> str:
    """LLaVA-1.5 short-answer convention (GQA, TextVQA, the built-in held-out set)."""
    return f"{question}\n{SHORT_ANSWER_SUFFIX}"


def multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    """LLaVA-1.5 multiple-choice convention: one 'A. text' line per option."""
    lines = [question] + [f"{chr(ord('A') + i)}. {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines + [MULTIPLE_CHOICE_SUFFIX])
