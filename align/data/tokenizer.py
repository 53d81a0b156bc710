"""A Llama-2-style tokenizer trained locally, and one loader for it and for the real Llama 2 tokenizer.

Like Llama 2's SentencePiece model: BPE with byte fallback (the 256 `<0xNN>` byte pieces sit at ids 3..258, so
no text is ever `<unk>`), `<unk>`=0, `<s>`=1, `</s>`=2, spaces as `▁` joined to the following word, and `<s>`
prepended when plain text is tokenized with special tokens (pretraining documents).

Llama 2 has no pad token. `load_tokenizer` gives any tokenizer without one `<unk>` as its pad: padding is
always masked, and unlike `</s>` it never collides with the end of an answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .chat import LLAMA2_CHAT_TEMPLATE

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = [f"<0x{byte:02X}>" for byte in range(256)]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a Llama-2-style BPE tokenizer on `texts`; deterministic for the same texts and size.

    `vocab_size` counts the 3 special and 256 byte tokens; a small corpus may end with fewer merges.
    """
    if vocab_size <= len(SPECIAL_TOKENS) + len(BYTE_TOKENS):
        raise ValueError(f"vocab_size: must exceed {len(SPECIAL_TOKENS) + len(BYTE_TOKENS)} (specials + bytes)")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + BYTE_TOKENS, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    # Byte pieces are listed as special tokens only to pin their ids; as added tokens they would match the
    # literal text "<0x41>" and vanish from decoding, so keep them as plain vocabulary for byte fallback.
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [token for token in spec["added_tokens"] if token["content"] in SPECIAL_TOKENS]
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        padding_side="right",
        chat_template=LLAMA2_CHAT_TEMPLATE,
        model_max_length=4096,
    )


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give any Llama-family tokenizer the Llama 2 chat template (with generation markers) and a pad token."""
    tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    missing = [name for name in ("bos_token", "eos_token") if getattr(tokenizer, name) is None]
    if missing:
        raise ValueError(f"tokenizer: Llama 2 chat needs {missing} to be set")
    return tokenizer


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer directory (ours or Meta's Llama 2 in Hugging Face format) ready for every stage."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer: no directory at {path}")
    return prepare_tokenizer(AutoTokenizer.from_pretrained(path))
