"""The Llama 2 chat format (PIPELINE.md §3) as a transformers chat template, and tokenization with loss masks.

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
"""

from __future__ import annotations

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
        if not isinstance(message["content"], str) or not message["content"].strip():
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
    """The Llama 2 chat text of `messages` (prompt or full dialogue) with the tokenizer's template."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False)


def tokenize_dialogue(tokenizer: Any, messages: Sequence[Message], *, loss_on: str = "all") -> dict[str, list[int]]:
    """Token ids of a dialogue and the mask of tokens that carry the SFT loss (PIPELINE.md §4).

    `loss_on="all"`: every assistant answer and its `</s>` (system and user tokens masked).
    `loss_on="last"`: only the last assistant answer (Ghost Attention samples, PIPELINE.md §4 step 3).
    Returns `input_ids` and `assistant_masks` (1 = trained on), the columns TRL's SFT collator reads.
    """
    if loss_on not in ("all", "last"):
        raise ValueError(f"loss_on: expected 'all' or 'last', got {loss_on!r}")
    validate_dialogue(messages)
    encoded = tokenizer.apply_chat_template(
        list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    mask = list(encoded["assistant_masks"])
    if loss_on == "last":
        end = len(mask)
        while end and not mask[end - 1]:
            end -= 1
        start = end
        while start and mask[start - 1]:
            start -= 1
        mask = [1 if start <= i < end else 0 for i in range(len(mask))]
    return {"input_ids": list(encoded["input_ids"]), "assistant_masks": mask}
