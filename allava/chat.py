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
_ROLE_TAG = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' }}{%- endif -%}"
)
_END_OF_TURN = (
    "{%- if message['role'] == 'assistant' -%}{{ '<|endoftext|>' }}{%- endif -%}"
    "{{ '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)
CHAT_TEMPLATE = _ROLE_TAG + (
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
) + _END_OF_TURN


# llama.cpp's media marker (libmtmd's mtmd_default_marker()): where llama-mtmd-cli and llama-cpp-python's
# MTMDChatHandler put an image in the rendered prompt.
LLAMA_CPP_MEDIA_MARKER = "<__media__>"

# The same chat format for llama.cpp (written into the GGUF as tokenizer.chat_template). Why a
# second template: llama.cpp's user paths hand the template the media marker, not an image part —
# MTMDChatHandler turns each image_url part into a text part holding the marker, llama-mtmd-cli
# prepends the marker to the prompt string — so CHAT_TEMPLATE would render "USER: <__media__>How
# many..." where transformers renders "USER: <image>\nHow many...", and the missing newline token
# changes the answers. This template renders exactly CHAT_TEMPLATE's text (with the marker where
# CHAT_TEMPLATE writes <image>) for transformers-style messages, and puts one newline after every
# marker it is handed (a marker part, or a marker or <image> inside string content).
GGUF_CHAT_TEMPLATE = _ROLE_TAG + (
    "{%- if message['content'] is string -%}"
    "{{ message['content'] | replace('<image>', '<__media__>') | replace('<__media__>\n', '<__media__>')"
    " | replace('<__media__>', '<__media__>\n') }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' -%}{{ '<__media__>\n' }}"
    "{%- elif part['type'] == 'text' and (part['text'] == '<__media__>' or part['text'] == '<image>') -%}"
    "{{ '<__media__>\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
) + _END_OF_TURN


def gguf_chat_template(template: str | None) -> str | None:
    """The template to store in a GGUF for a checkpoint whose template is ``template``: the
    llama.cpp form of the toolkit's own format, anything else unchanged (a foreign template's
    image handling is its own)."""
    return GGUF_CHAT_TEMPLATE if template is not None and template.strip() == CHAT_TEMPLATE.strip() else template


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
