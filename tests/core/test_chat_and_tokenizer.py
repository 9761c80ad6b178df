"""The chat template, the segment renderer and the tokeniser must agree token for token."""

import pytest

from allava.chat import CHAT_TEMPLATE, prompt_text, render_segments, to_messages
from allava.schema import load_records
from allava.tokenizer import train_bpe_tokenizer
from allava.world import corpus


@pytest.fixture(scope="module")
def tokenizer(world_root):
    return train_bpe_tokenizer(corpus(world_root), 512)


def test_special_tokens(tokenizer):
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 0
    assert tokenizer.convert_tokens_to_ids("<image>") == 1
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 0
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_segments_equal_template_and_whole_string_tokens(tokenizer, world_root):
    records, _ = load_records(world_root / "ALLaVA-VQA-World.json")
    texts, _ = load_records(world_root / "ALLaVA-Text-World.json")
    for rec in records[:20] + texts[:5]:
        segments = render_segments(rec.conversations)
        joined = "".join(s.text for s in segments)
        assert joined == tokenizer.apply_chat_template(to_messages(rec.conversations), tokenize=False)
        whole = tokenizer(joined, add_special_tokens=False)["input_ids"]
        pieces = [t for s in segments for t in tokenizer(s.text, add_special_tokens=False)["input_ids"]]
        assert pieces == whole, rec.id


def test_generation_prompt_matches_template(tokenizer):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle?"}]}]
    rendered = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == prompt_text("What colour is the circle?")


def test_training_tokenizer_merges_the_template_tags(tmp_path, world_root):
    """train/pipeline trains the world BPE on template-rendered text: the tags become single tokens."""
    from allava.modeling import load_preset
    from tests.conftest import small_config_dict
    from train.config import TrainConfig, _build
    from train.pipeline import make_tokenizer

    cfg = _build(TrainConfig, small_config_dict(tmp_path / "o", world_root), "test")
    tok = make_tokenizer(load_preset("tiny"), cfg, world_root)
    pieces = tok.convert_ids_to_tokens(tok("USER: hi\nASSISTANT:", add_special_tokens=False)["input_ids"])
    assert "USER" in pieces and "ASSISTANT" in pieces, pieces
