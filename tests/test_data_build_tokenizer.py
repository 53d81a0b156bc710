"""`data/build_tokenizer.py`: corpus in, tokenizer directory out; missing corpus is one clear line."""

import importlib.util
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import TOKENIZER_TEXT

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "build_tokenizer.py"
spec = importlib.util.spec_from_file_location("build_tokenizer", SCRIPT)
build_tokenizer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_tokenizer)


def test_builds_a_loadable_tokenizer_from_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(TOKENIZER_TEXT[:4]))
    (tmp_path / "b.jsonl").write_text('{"text": "Seven is a prime number."}\n')
    out = tmp_path / "tok"
    build_tokenizer.main(
        ["--corpus", str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl"), "--vocab_size", "400", "--out", str(out)]
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.decode(tokenizer("Seven is prime", add_special_tokens=False).input_ids) == "Seven is prime"


def test_missing_corpus_or_bad_jsonl_exit_with_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        build_tokenizer.main(["--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "t")])
    assert exit_info.value.code == f"build_tokenizer: no corpus file at {tmp_path / 'nope.txt'}"
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(SystemExit) as exit_info:
        build_tokenizer.main(["--corpus", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "t")])
    assert exit_info.value.code.endswith("bad.jsonl: line 2: expected a JSON object with a 'text' field")
