"""A Llama-2-style tokenizer trained locally, and one loader for it and for the real Llama 2 tokenizer.

Like Llama 2's SentencePiece model: BPE with byte fallback (the 256 `<0xNN>` byte pieces sit at ids 3..258, so
no text is ever `<unk>`), `<unk>`=0, `<s>`=1, `</s>`=2, spaces as `▁` joined to the following word, and `<s>`
prepended when plain text is tokenized with special tokens (pretraining documents).

Llama 2 has no pad token. `load_tokenizer` gives any tokenizer without one `<unk>` as its pad (else its
`eos_token`): padding is always masked, and unlike `</s>` it never collides with the end of an answer.

Chat template (`chat_template` of `load_tokenizer` and of every stage that loads a tokenizer):
- "tokenizer" (default): the tokenizer's own template (ChatML, Llama 2's, anything with roles user/assistant
  and an optional system), used by every stage and saved into every checkpoint; a tokenizer without one gets
  Llama 2's, said in the log;
- "llama2": Llama 2's template (`align.data.chat.LLAMA2_CHAT_TEMPLATE`) whatever the tokenizer has;
- a path to a `.jinja` file: that template.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import jinja2
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..io import read_text, shipped_path
from ..modeling.loading import remote_code_allowed
from .chat import LLAMA2_CHAT_TEMPLATE

logger = logging.getLogger(__name__)
CHAT_TEMPLATE_HELP = "chat template: 'tokenizer' (its own; Llama 2's if it has none), 'llama2', or a .jinja file"
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


def check_chat_template_setting(value: str, option: str = "chat_template") -> None:
    """ValueError naming `option` unless `value` is "tokenizer", "llama2" or an existing template file."""
    if value not in ("tokenizer", "llama2") and not Path(value).is_file():
        raise ValueError(f"{option}: expected 'tokenizer', 'llama2' or a .jinja file, got {value!r} (no such file)")


# What transformers (5.x) records in a loaded tokenizer's init_kwargs and would write into tokenizer_config.json.
LOADING_FACTS = ("is_local", "local_files_only")
# The fields of a user's tokenizer_config.json and generation_config.json a stage's saved copy may change (and only
# where the user's has none): training and batched generation need a pad token (docs/model.md).
SAVED_TOKENIZER_CHANGES = {"tokenizer_config.json": {"pad_token"}, "generation_config.json": {"pad_token_id"}}


def keep_the_users_tokenizer_config(tokenizer: PreTrainedTokenizerBase, saved: Path) -> None:
    """Rewrite `saved`/tokenizer_config.json (just written by `tokenizer.save_pretrained`) as the one of the folder
    the tokenizer was loaded from, changing only what align means to: the fields of SAVED_TOKENIZER_CHANGES the
    user's file leaves empty, and a chat template held in the file that align replaced. Loading through the
    Auto classes otherwise rewrites a user's file (a tokenizer class renamed after the model type, an unk token
    added, transformers' loading facts), which no stage means to change."""
    source = Path(str(tokenizer.name_or_path)) / "tokenizer_config.json"
    written = saved / "tokenizer_config.json"
    if not source.is_file() or not written.is_file() or source.resolve() == written.resolve():
        return
    try:
        theirs, ours = json.loads(read_text(source)), json.loads(read_text(written))
    except ValueError:
        return  # a file transformers read but that is no JSON object: keep what transformers wrote
    if not isinstance(theirs, dict) or not isinstance(ours, dict):
        return
    kept = dict(theirs)
    for key in SAVED_TOKENIZER_CHANGES["tokenizer_config.json"]:
        if theirs.get(key) is None and ours.get(key) is not None:
            kept[key] = ours[key]
    if "chat_template" in theirs and ours.get("chat_template") != theirs["chat_template"]:
        if ours.get("chat_template") is None:
            del kept["chat_template"]  # align's template is in chat_template.jinja now
        else:
            kept["chat_template"] = ours["chat_template"]
    written.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, chat_template: str = "tokenizer") -> PreTrainedTokenizerBase:
    """Set the chat template `chat_template` asks for (module docstring) and a pad token."""
    check_chat_template_setting(chat_template)
    if chat_template == "llama2":
        tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    elif chat_template != "tokenizer":
        tokenizer.chat_template = read_text(chat_template)
    elif not tokenizer.chat_template:
        tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
        pieces = len(tokenizer("[INST]", add_special_tokens=False).input_ids)
        logger.warning(
            "tokenizer %s has no chat template: using Llama 2's%s",
            tokenizer.name_or_path or "",
            f" ('[INST]' is {pieces} tokens in this vocabulary; give chat_template a .jinja file to use another)"
            if pieces > 3
            else "",
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    uses_bos = "bos_token" in tokenizer.get_chat_template()
    missing = [name for name, needed in (("bos_token", uses_bos), ("eos_token", True)) if needed and
               getattr(tokenizer, name) is None]  # fmt: skip
    if missing:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path}: the chat template needs {missing} to be set (or give "
            "chat_template a .jinja file that does without)"
        )
    try:  # a template that does not render fails here, named, not at the first dialogue of a run
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    except jinja2.TemplateError as error:
        where = chat_template if chat_template not in ("tokenizer", "llama2") else f"of {tokenizer.name_or_path}"
        raise ValueError(f"chat_template {where}: the template does not render a user turn ({error})") from None
    return tokenizer


def load_tokenizer(path: str | os.PathLike, chat_template: str = "tokenizer") -> PreTrainedTokenizerBase:
    """Load a tokenizer directory (ours, Meta's Llama 2 or any other in Hugging Face format) ready for every
    stage, with the chat template `chat_template` asks for (module docstring)."""
    path = shipped_path(path)  # the demo's data/tokenizer from any folder
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer: no directory at {path}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote_code_allowed())
    except (OSError, ValueError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"tokenizer: {path}: not a tokenizer folder transformers can load ({reason})") from None
    for loading_fact in LOADING_FACTS:  # how it was loaded, not a setting: the saved copy stays the user's
        tokenizer.init_kwargs.pop(loading_fact, None)
    return prepare_tokenizer(tokenizer, chat_template)
