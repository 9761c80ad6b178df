"""Tokenizers: a GPT-2 style byte-level BPE trained on the built-in world, or a hub tokenizer.

Both end up as a transformers fast tokenizer with ``<|endoftext|>`` as bos/eos/pad, an
``<image>`` special token and the project's chat template, so the same object drives training
masks, inference and the GGUF ``gpt2`` tokenizer export (vocab + merges).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from allava.chat import CHAT_TEMPLATE, EOS
from allava.schema import IMAGE_MARKER

SPECIAL_TOKENS = [EOS, IMAGE_MARKER]


def _finish(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 2048
    return tokenizer


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE (GPT-2 pre-tokeniser, no prefix space) on ``texts``.

    Deterministic for a fixed corpus order. Token 0 is ``<|endoftext|>`` and 1 is ``<image>``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        extra_special_tokens={"image_token": IMAGE_MARKER},
    )
    return _finish(fast)


def load_pretrained_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load a hub/local tokenizer (Phi-2's for ALLaVA-3B) and add ``<image>`` and the template."""
    tok = AutoTokenizer.from_pretrained(name_or_path)
    if IMAGE_MARKER not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_MARKER]})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return _finish(tok)
