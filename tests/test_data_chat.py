"""Chat formats: Llama 2's (docs/method.md §3) exact strings and the SFT loss mask token by token; the same masks
under any template (ChatML, a template without generation markers)."""

import re

import pytest

from align.data import (
    LLAMA2_CHAT_TEMPLATE,
    DialogueError,
    answer_end_token_ids,
    render,
    tokenize_dialogue,
    validate_dialogue,
)
from align.data.chat import has_generation_markers

SYSTEM = {"role": "system", "content": "Be brief."}
DIALOGUE = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
]


def test_single_turn_without_system(tokenizer):
    assert render(tokenizer, DIALOGUE[:1]) == "<s>[INST] Hi there [/INST]"
    assert render(tokenizer, DIALOGUE[:2]) == "<s>[INST] Hi there [/INST] Hello! </s>"


def test_system_prompt_goes_inside_the_first_instruction(tokenizer):
    assert render(tokenizer, [SYSTEM, *DIALOGUE[:1]]) == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST]"


def test_multi_turn_with_and_without_system(tokenizer):
    assert render(tokenizer, DIALOGUE) == (
        "<s>[INST] Hi there [/INST] Hello! </s><s>[INST] What is 2+2? [/INST] 4 </s>"
    )
    assert render(tokenizer, [SYSTEM, *DIALOGUE]) == (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! </s><s>[INST] What is 2+2? [/INST] 4 </s>"
    )
    # A prompt for the next answer ends with [/INST]: the model continues with " answer </s>".
    assert render(tokenizer, [SYSTEM, *DIALOGUE[:3]]).endswith("</s><s>[INST] What is 2+2? [/INST]")


def test_contents_are_stripped_like_metas_reference(tokenizer):
    messages = [{"role": "user", "content": "  Hi there\n"}, {"role": "assistant", "content": " Hello! "}]
    assert render(tokenizer, messages) == "<s>[INST] Hi there [/INST] Hello! </s>"


def test_template_refuses_roles_out_of_order(tokenizer):
    with pytest.raises(Exception, match="roles must alternate"):
        render(tokenizer, [{"role": "assistant", "content": "I speak first"}])


def test_loss_mask_covers_exactly_the_answers(tokenizer):
    encoded = tokenize_dialogue(tokenizer, [SYSTEM, *DIALOGUE])
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assert tokenizer.decode(ids) == render(tokenizer, [SYSTEM, *DIALOGUE])  # one <s> at the start, nothing added
    assert len(ids) == len(mask)
    trained = tokenizer.decode([token for token, flag in zip(ids, mask) if flag])
    untrained = tokenizer.decode([token for token, flag in zip(ids, mask) if not flag])
    # The answers with their leading space and " </s>" are trained; system, user turns, [INST] and <s> are not.
    assert trained == "Hello! </s> 4 </s>"
    assert untrained == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST]<s>[INST] What is 2+2? [/INST]"
    # Token by token at the end: "[/INST]" then "▁" "4" "▁" "</s>"; the lone "▁" opens the answer, so it is trained.
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[-5:] == ["<0x5D>", "▁", "4", "▁", "</s>"] and mask[-5:] == [0, 1, 1, 1, 1]


def test_loss_mask_by_token_ids(tokenizer):
    encoded = tokenize_dialogue(tokenizer, DIALOGUE)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    prompt_1 = tokenizer.apply_chat_template(DIALOGUE[:1], tokenize=True, return_dict=True)["input_ids"]
    turn_1 = tokenizer.apply_chat_template(DIALOGUE[:2], tokenize=True, return_dict=True)["input_ids"]
    prompt_2 = tokenizer.apply_chat_template(DIALOGUE[:3], tokenize=True, return_dict=True)["input_ids"]
    # Masked exactly on [0, len(prompt_1)), trained on [len(prompt_1), len(turn_1)), ...
    expected = (
        [0] * len(prompt_1)
        + [1] * (len(turn_1) - len(prompt_1))
        + [0] * (len(prompt_2) - len(turn_1))
        + [1] * (len(ids) - len(prompt_2))
    )
    assert ids[: len(turn_1)] == turn_1 and ids[: len(prompt_2)] == prompt_2
    assert mask == expected
    assert ids[len(turn_1) - 1] == tokenizer.eos_token_id and ids[-1] == tokenizer.eos_token_id


def test_last_turn_only_mask(tokenizer):
    full = tokenize_dialogue(tokenizer, DIALOGUE)
    last = tokenize_dialogue(tokenizer, DIALOGUE, loss_on="last")
    prompt_2 = tokenizer.apply_chat_template(DIALOGUE[:3], tokenize=True, return_dict=True)["input_ids"]
    assert last["input_ids"] == full["input_ids"]
    assert last["assistant_masks"] == [0] * len(prompt_2) + [1] * (len(full["input_ids"]) - len(prompt_2))


@pytest.mark.parametrize(
    "messages, message",
    [
        ([], "non-empty list"),
        ([{"role": "user", "content": "hi"}], "no assistant turn"),
        ([{"role": "system", "content": "x"}], "system message alone"),
        (
            [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}],
            "turn 1: expected role 'assistant'",
        ),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}],
            "message 1 \\(assistant\\): empty",
        ),
    ],
)
def test_bad_dialogues_are_named(messages, message):
    with pytest.raises(DialogueError, match=message):
        validate_dialogue(messages, where="sft.jsonl record 3")


def test_tokenize_refuses_a_dialogue_without_an_answer(tokenizer):
    with pytest.raises(DialogueError, match="no assistant turn"):
        tokenize_dialogue(tokenizer, DIALOGUE[:1])


def without_generation_markers(template: str) -> str:
    return re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", template)


def test_answer_spans_found_by_rendering_match_the_generation_markers(tokenizer):
    """Llama 2's template with and without `{% generation %}` markers: the same ids and the same loss mask."""
    from copy import deepcopy

    plain = deepcopy(tokenizer)
    plain.chat_template = without_generation_markers(LLAMA2_CHAT_TEMPLATE)
    assert not has_generation_markers(plain) and has_generation_markers(tokenizer)
    for dialogue in ([SYSTEM, *DIALOGUE], DIALOGUE):
        for loss_on in ("all", "last"):
            assert tokenize_dialogue(plain, dialogue, loss_on=loss_on) == tokenize_dialogue(
                tokenizer, dialogue, loss_on=loss_on
            )


def test_chatml_loss_mask_covers_the_answers_and_their_end_of_turn(chatml_tokenizer):
    encoded = tokenize_dialogue(chatml_tokenizer, [SYSTEM, *DIALOGUE])
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assert chatml_tokenizer.decode(ids) == render(chatml_tokenizer, [SYSTEM, *DIALOGUE])
    trained = chatml_tokenizer.decode([token for token, flag in zip(ids, mask) if flag])
    untrained = chatml_tokenizer.decode([token for token, flag in zip(ids, mask) if not flag])
    assert trained == "Hello!<|im_end|>\n4<|im_end|>\n"
    assert untrained == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    last = tokenize_dialogue(chatml_tokenizer, DIALOGUE, loss_on="last")
    assert chatml_tokenizer.decode([t for t, f in zip(last["input_ids"], last["assistant_masks"]) if f]) == (
        "4<|im_end|>\n"
    )


def test_prompts_get_the_templates_generation_prompt_and_answers_end_at_its_end_of_turn(tokenizer, chatml_tokenizer):
    assert render(chatml_tokenizer, DIALOGUE[:1]).endswith(
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render(tokenizer, DIALOGUE[:1]) == "<s>[INST] Hi there [/INST]"  # Llama 2 needs no generation prompt
    assert chatml_tokenizer.convert_ids_to_tokens(answer_end_token_ids(chatml_tokenizer)) == [
        "<|im_end|>",
        "<|endoftext|>",
    ]
    assert answer_end_token_ids(tokenizer) == [tokenizer.eos_token_id]


def test_a_template_that_does_not_render_prefixes_is_refused(chatml_tokenizer):
    from copy import deepcopy

    odd = deepcopy(chatml_tokenizer)
    odd.chat_template = "{{ messages | length }} turns: {% for m in messages %}{{ m['content'] }} {% endfor %}"
    with pytest.raises(DialogueError, match="add \\{% generation %\\} markers"):
        tokenize_dialogue(odd, DIALOGUE)
