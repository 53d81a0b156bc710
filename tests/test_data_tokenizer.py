"""The locally trained Llama-2-style tokenizer, and the loader shared with Meta's Llama 2 tokenizer."""

import json

import pytest
from transformers import AutoTokenizer

from align.data import LLAMA2_CHAT_TEMPLATE, load_tokenizer, train_tokenizer
from conftest import TOKENIZER_TEXT


def test_llama_special_tokens_and_byte_pieces(tokenizer):
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.convert_tokens_to_ids("<0x00>") == 3 and tokenizer.convert_tokens_to_ids("<0xFF>") == 258
    assert tokenizer.pad_token == "<unk>"
    assert len(tokenizer) <= 600


def test_byte_fallback_round_trips_any_text_without_unk(tokenizer):
    text = "Zebra ✓ naïve 你好 — ok"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    # Plain text gets <s> in front, as Llama's tokenizer does for pretraining documents.
    assert tokenizer(text).input_ids == [tokenizer.bos_token_id, *ids]


def test_byte_piece_text_is_not_a_special_token(tokenizer):
    ids = tokenizer("<0x41>", add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == "<0x41>"


def test_training_is_deterministic():
    first = train_tokenizer(TOKENIZER_TEXT, vocab_size=600)
    second = train_tokenizer(TOKENIZER_TEXT, vocab_size=600)
    assert first.get_vocab() == second.get_vocab()
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_save_and_load_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "What is 12 plus 30?"
    assert loaded(text).input_ids == tokenizer(text).input_ids
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert loaded.apply_chat_template(messages, tokenize=False) == "<s>[INST] Hi [/INST] Hello </s>"


def test_load_tokenizer_prepares_a_llama_2_directory_without_template_or_pad(tokenizer, tmp_path):
    # Meta's Llama 2 tokenizer in Hugging Face format has no pad token and may carry another chat template;
    # stand it in with ours, stripped of both.
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("pad_token", None)
    config["tokenizer_class"] = "LlamaTokenizer"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    raw = AutoTokenizer.from_pretrained(tmp_path)
    assert raw.pad_token is None and not raw.chat_template
    prepared = load_tokenizer(tmp_path)
    assert prepared.pad_token == "<unk>" and prepared.chat_template == LLAMA2_CHAT_TEMPLATE
    assert prepared.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False) == "<s>[INST] Hi [/INST]"


def test_missing_tokenizer_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer: no directory at"):
        load_tokenizer(tmp_path / "nope")


def test_vocab_too_small_for_bytes():
    with pytest.raises(ValueError, match="vocab_size: must exceed 259"):
        train_tokenizer(["a b c"], vocab_size=100)


def test_load_tokenizer_keeps_the_tokenizers_own_template(chatml_tokenizer, tmp_path, caplog):
    """A user's tokenizer keeps its ChatML template; Llama 2's only when it has none (logged) or when asked."""
    import logging

    from conftest import CHATML_TEMPLATE, byte_level_tokenizer

    chatml_tokenizer.save_pretrained(tmp_path / "chatml")
    loaded = load_tokenizer(tmp_path / "chatml")
    assert loaded.chat_template == CHATML_TEMPLATE and loaded.pad_token == "<|endoftext|>"  # no unk: eos pads
    assert load_tokenizer(tmp_path / "chatml", "llama2").chat_template == LLAMA2_CHAT_TEMPLATE
    template = tmp_path / "mine.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    assert load_tokenizer(tmp_path / "chatml", str(template)).chat_template == template.read_text()
    with pytest.raises(ValueError, match="chat_template: expected 'tokenizer', 'llama2' or a .jinja file"):
        load_tokenizer(tmp_path / "chatml", "chatml")

    byte_level_tokenizer(["some text to learn from"] * 5, chat_template=None).save_pretrained(tmp_path / "bare")
    with caplog.at_level(logging.WARNING):
        bare = load_tokenizer(tmp_path / "bare")
    assert bare.chat_template == LLAMA2_CHAT_TEMPLATE
    assert "has no chat template: using Llama 2's" in caplog.text and "'[INST]' is" in caplog.text
