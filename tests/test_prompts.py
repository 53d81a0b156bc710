"""Prompt files of the on-policy stages: strings or messages, booleans as booleans, unique ids, named errors."""

import json

import pytest

from align.prompts import load_prompts


def write(path, records):
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in records))
    return str(path)


def test_a_prompt_may_be_a_string_or_messages_and_defaults_are_filled(tmp_path):
    path = write(tmp_path / "p.jsonl", [{"prompt": "Hi?"}, {"id": "x", "prompt": [{"role": "user", "content": "Yo"}],
                                                            "is_safety": True}])  # fmt: skip
    assert load_prompts(path) == [
        {"id": "1", "prompt": [{"role": "user", "content": "Hi?"}], "is_safety": False},
        {"id": "x", "prompt": [{"role": "user", "content": "Yo"}], "is_safety": True},
    ]


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"id": "a", "prompt": "q", "is_safety": "false"}], r"line 1: field 'is_safety': expected true or false"),
        ([{"id": "a", "prompt": "q"}, {"id": "b", "prompt": "r"}, {"id": "a", "prompt": "s"}],
         r"line 3: field 'id': 'a' is already the id of line 1"),
        ([{"prompt": [{"content": "no role"}]}], r"line 1: field 'prompt': message 0: expected a dict with 'role'"),
        ([{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
         r"line 1: field 'prompt': a prompt must end with a user turn"),
        (["{not json"], r"line 1: not valid JSON"),
    ],
)  # fmt: skip
def test_bad_prompt_files_name_the_line_and_field(tmp_path, records, message):
    with pytest.raises(ValueError, match=message):
        load_prompts(write(tmp_path / "p.jsonl", records))
