"""Chat formats: Llama 2's (docs/method.md §3) as a transformers chat template, and tokenization with loss masks
under any chat template (the user's tokenizer keeps its own; see `align.data.tokenizer.load_tokenizer`).

    <s>[INST] <<SYS>>
    {system}
    <</SYS>>

    {user_1} [/INST] {assistant_1} </s><s>[INST] {user_2} [/INST] {assistant_2} </s>

Message contents are stripped of surrounding white space, as Meta's reference `chat_completion` does. A prompt
that ends with a user turn renders as `... [/INST]`: the model continues with ` {answer} </s>`, so no extra
generation prompt is needed.

Each assistant answer, with the space before it and the ` </s>` after it, sits inside `{% generation %}`
markers: the rendered text is unchanged, and `return_assistant_tokens_mask=True` (used by TRL's
`assistant_only_loss`) marks exactly those tokens. The leading space belongs to the answer because the model
must produce it after `[/INST]`; when it tokenizes as a lone `▁` it would otherwise never be trained.

How the answer spans are found for any template (`answer_mask`): a template with `{% generation %}` markers
says so itself. Otherwise each answer's span is found by rendering: the dialogue up to the answer with the
generation prompt (`add_generation_prompt=True`, e.g. ChatML's `<|im_start|>assistant\n`) is a prefix of the
dialogue up to and including the answer; the characters between the two are the answer and whatever the
template closes it with (ChatML's `<|im_end|>\n`, Llama 2's ` </s>`), and the tokens starting in them carry
the loss. A template that does not render a dialogue's beginning as a prefix of the whole is refused with a
message asking for generation markers. The end-of-turn token that closes an answer (`answer_end_token_ids`)
stops generation in every stage, beside the tokenizer's `eos_token`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

LLAMA2_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_message = messages[0]['content'] | trim -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_message = none -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Llama 2 chat: after an optional system message, roles must alternate "
    "user/assistant/user/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.index0 == 0 and system_message is not none -%}"
    "{{ bos_token + '[INST] <<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] | trim"
    " + ' [/INST]' }}"
    "{%- else -%}"
    "{{ bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' }}"
    "{%- endif -%}"
    "{%- else -%}"
    "{% generation %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

Message = dict[str, str]


class DialogueError(ValueError):
    """A dialogue that is not a valid Llama 2 chat (roles, order, empty turns)."""


def validate_dialogue(messages: Sequence[Message], *, where: str = "dialogue", need_answer: bool = True) -> None:
    """Check roles alternate user/assistant after an optional system message; raise `DialogueError` naming `where`.

    With `need_answer`, the dialogue must end with an assistant turn (training data); without, it must end with a
    user turn (a prompt to answer).
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DialogueError(f"{where}: expected a non-empty list of messages, got {messages!r:.80}")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DialogueError(f"{where}: message {index}: expected a dict with 'role' and 'content'")
        if not isinstance(message["content"], str):
            raise DialogueError(
                f"{where}: message {index} ({message['role']}): field 'content': expected text, got "
                f"{message['content']!r:.60}"
            )
        if not message["content"].strip():
            raise DialogueError(f"{where}: message {index} ({message['role']}): empty content")
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    if not turns:
        raise DialogueError(f"{where}: a system message alone has no user turn")
    for index, message in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise DialogueError(
                f"{where}: turn {index}: expected role {expected!r}, got {message['role']!r} "
                "(roles must alternate user/assistant after an optional system message)"
            )
    last = turns[-1]["role"]
    if need_answer and last != "assistant":
        raise DialogueError(f"{where}: has no assistant turn to train on (last role is {last!r})")
    if not need_answer and last != "user":
        raise DialogueError(f"{where}: a prompt must end with a user turn (last role is {last!r})")


def render(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The chat text of `messages` with the tokenizer's template; a prompt (ending with a user turn) gets the
    template's generation prompt (ChatML's `<|im_start|>assistant\n`; Llama 2 needs none)."""
    messages = list(messages)
    is_prompt = bool(messages) and messages[-1]["role"] != "assistant"
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=is_prompt)


_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template marks assistant answers with `{% generation %}`."""
    template = tokenizer.get_chat_template() if tokenizer.chat_template else ""
    return bool(_GENERATION_TAG.search(template))


def answer_spans(tokenizer: Any, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered dialogue and the character span of each assistant answer (with what closes it), found by
    rendering prefixes of the dialogue (module docstring)."""
    messages = list(messages)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (through.startswith(before) and text.startswith(through)):
            raise DialogueError(
                "chat template: rendering a dialogue's first turns does not give a prefix of the whole dialogue, "
                "so the answers cannot be located; add {% generation %} markers around the assistant answers"
            )
        spans.append((len(before), len(through)))
    return text, spans


def answer_mask(tokenizer: Any, messages: Sequence[Message]) -> tuple[list[int], list[int]]:
    """Token ids of a dialogue and a mask with 1 on the tokens of every assistant answer and its closing
    tokens, for any chat template (module docstring)."""
    if has_generation_markers(tokenizer):
        encoded = tokenizer.apply_chat_template(
            list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(encoded["input_ids"]), list(encoded["assistant_masks"])
    if not getattr(tokenizer, "is_fast", False):
        raise DialogueError("chat template: a slow tokenizer needs {% generation %} markers in its chat template")
    text, spans = answer_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(start <= begin < end for start, end in spans)) for begin, _ in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), mask


def answer_end_token_ids(tokenizer: Any) -> list[int]:
    """The ids that end an assistant answer: `eos_token` and the special token the chat template closes an
    answer with (Llama 2: `</s>`; ChatML: `<|im_end|>`). Generation stops at any of them."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "OK"}]
    text, [(_, end)] = answer_spans(tokenizer, probe)
    closing = text[text.rindex("OK", 0, end) + 2 : end]
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    ids = [token for token in tokenizer(closing, add_special_tokens=False).input_ids if token in special]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise DialogueError(
            "tokenizer: no eos_token and the chat template closes answers with no special token, so generation "
            "could not stop; set eos_token"
        )
    return list(dict.fromkeys(ids))


def tokenize_dialogue(tokenizer: Any, messages: Sequence[Message], *, loss_on: str = "all") -> dict[str, list[int]]:
    """Token ids of a dialogue and the mask of tokens that carry the SFT loss (docs/method.md §4), for any chat
    template (`answer_mask`).

    `loss_on="all"`: every assistant answer and its `</s>` (system and user tokens masked).
    `loss_on="last"`: only the last assistant answer (Ghost Attention samples, docs/method.md §4 step 3).
    Returns `input_ids` and `assistant_masks` (1 = trained on), the columns TRL's SFT collator reads.
    """
    if loss_on not in ("all", "last"):
        raise ValueError(f"loss_on: expected 'all' or 'last', got {loss_on!r}")
    validate_dialogue(messages)
    input_ids, mask = answer_mask(tokenizer, messages)
    if loss_on == "last":
        end = len(mask)
        while end and not mask[end - 1]:
            end -= 1
        start = end
        while start and mask[start - 1]:
            start -= 1
        mask = [1 if start <= i < end else 0 for i in range(len(mask))]
    return {"input_ids": input_ids, "assistant_masks": mask}


_LONGEST_TOKEN: dict[int, tuple[Any, int]] = {}  # id(tokenizer) -> (tokenizer, characters of its longest token)


def longest_token_characters(tokenizer: Any) -> int:
    """How many characters of text one token of `tokenizer` covers at most (its longest vocabulary entry, added
    tokens included; byte-level entries count bytes, which is at least the characters they decode to)."""
    cached = _LONGEST_TOKEN.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer:
        cached = (tokenizer, max(len(token) for token in tokenizer.get_vocab()) + 1)  # + a SentencePiece space
        _LONGEST_TOKEN[id(tokenizer)] = cached
    return cached[1]


def surely_longer_than(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> bool:
    """Whether `texts` (a record's contents) cannot fit in `max_tokens` tokens whatever the template adds, decided
    from their characters alone: more than `max_tokens` times the longest token's characters. The stages check
    this before tokenizing, so a huge record (a 30 MB line) is refused at once instead of tokenized for minutes;
    a record that passes is tokenized and its exact length checked as before."""
    return sum(len(text) for text in texts) > max_tokens * longest_token_characters(tokenizer)
