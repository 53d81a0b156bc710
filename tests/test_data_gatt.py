"""Ghost Attention dialogues (docs/method.md §4): instruction on every sampled turn, once in training, last answer."""

import random

import pytest

from align.data import GattInstruction, build_gatt_dialogue, sample_instruction, tokenize_gatt_dialogue

INSTRUCTION = GattInstruction((("character", "a pirate"), ("topic", "the sea")))


class RecordingSampler:
    """Answers "Arr, answer N" and records the context it was given."""

    def __init__(self):
        self.contexts = []

    def __call__(self, messages):
        self.contexts.append([dict(m) for m in messages])
        return f"Arr, answer {len(self.contexts)}"


def test_instruction_text_combines_constraints():
    assert INSTRUCTION.text == "Act as a pirate. Only talk about the sea."


def test_sampler_sees_the_instruction_on_every_user_turn():
    sampler = RecordingSampler()
    build_gatt_dialogue(["Hi", "How are you?", "Bye"], INSTRUCTION, sampler)
    assert len(sampler.contexts) == 3
    last_context = sampler.contexts[-1]
    users = [m["content"] for m in last_context if m["role"] == "user"]
    assert users == [f"{INSTRUCTION.text}\n\n{u}" for u in ("Hi", "How are you?", "Bye")]
    assert [m["content"] for m in last_context if m["role"] == "assistant"] == ["Arr, answer 1", "Arr, answer 2"]


def test_training_dialogue_keeps_the_instruction_once():
    as_system = build_gatt_dialogue(["Hi", "Bye"], INSTRUCTION, RecordingSampler())
    assert as_system == [
        {"role": "system", "content": INSTRUCTION.text},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Arr, answer 1"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Arr, answer 2"},
    ]
    in_first_turn = build_gatt_dialogue(["Hi", "Bye"], INSTRUCTION, RecordingSampler(), instruction_as_system=False)
    assert in_first_turn[0] == {"role": "user", "content": f"{INSTRUCTION.text}\n\nHi"}
    assert in_first_turn[2] == {"role": "user", "content": "Bye"}


def test_loss_mask_covers_only_the_last_answer(tokenizer):
    dialogue = build_gatt_dialogue(["Hi", "How are you?", "Bye"], INSTRUCTION, RecordingSampler())
    encoded = tokenize_gatt_dialogue(tokenizer, dialogue)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    prompt = tokenizer.apply_chat_template(dialogue[:-1], tokenize=True, return_dict=True)["input_ids"]
    assert ids[: len(prompt)] == prompt
    assert mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "Arr, answer 3 </s>"


def test_sample_instruction_is_seeded_and_combines_distinct_kinds():
    first = [sample_instruction(random.Random(7)) for _ in range(3)]
    again = [sample_instruction(random.Random(7)) for _ in range(3)]
    assert first == again
    many = [sample_instruction(random.Random(seed), max_constraints=3) for seed in range(50)]
    assert any(len(i.constraints) > 1 for i in many)
    assert all(len({kind for kind, _ in i.constraints}) == len(i.constraints) for i in many)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one user turn"):
        build_gatt_dialogue([], INSTRUCTION, RecordingSampler())
    with pytest.raises(ValueError, match="empty answer for turn 0"):
        build_gatt_dialogue(["Hi"], INSTRUCTION, lambda messages: " ")
    with pytest.raises(ValueError, match="unknown instruction kinds"):
        sample_instruction(random.Random(0), values={"mood": ["happy"]})
