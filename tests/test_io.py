"""align.io: atomic writes, and reading the user's files with every bad line named by file and line."""

import gzip
import json
from pathlib import Path

import pytest

from align.io import (
    UnreadableRecord,
    jsonl_records,
    load_table,
    looks_like_a_path,
    read_jsonl,
    read_text,
    table_records,
)


def test_lines_that_are_not_utf8_or_json_are_named_and_the_rest_read(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wb") as file:
        file.write(b'{"a": 1}\n\n{"a": \n\xff\xfe\n[1]\n')
    records = list(jsonl_records(path))
    assert [where for where, _ in records] == ["record 0 (line 1)", "record 1 (line 3)", "record 2 (line 4)",
                                               "record 3 (line 5)"]  # fmt: skip
    assert records[0][1] == {"a": 1} and records[3][1] == [1]
    assert isinstance(records[1][1], UnreadableRecord) and "not valid JSON" in records[1][1].reason
    assert isinstance(records[2][1], UnreadableRecord) and records[2][1].reason.startswith(
        "not UTF-8 text (byte 0xff)"
    )
    with pytest.raises(ValueError, match=r"data.jsonl.gz: record 1 \(line 3\): not valid JSON"):
        read_jsonl(path)


def test_whole_file_reads_name_the_line_of_a_bad_byte(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"lr: 1\nname: caf\xe9\n")
    with pytest.raises(ValueError, match=r"config.yaml: line 2: not UTF-8 text \(byte 0xe9\)"):
        read_text(path)


def test_local_paths_are_told_from_hub_dataset_names():
    for name in ("Anthropic/hh-rlhf", "PKU-Alignment/PKU-SafeRLHF", "imdb"):
        assert not looks_like_a_path(name), name
    for path in ("data/train.jsonl", "./pairs", "/data/pairs", "~/pairs", "a/b/c", "x.parquet", "hh.jsonl.gz"):
        assert looks_like_a_path(path), path


def test_a_hub_name_that_does_not_load_is_one_line_naming_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"helpfulness_data: 'someone/pairs' is not a local file and did not load "
                                         r"as a Hub dataset \(the Hub is offline here"):  # fmt: skip
        table_records("someone/pairs", "helpfulness_data")
    with pytest.raises(FileNotFoundError, match="dataset: no file at data/missing.jsonl"):
        table_records("data/missing.jsonl", "dataset")


def test_tables_are_json_objects_of_jsonl_json_and_parquet_files(tmp_path):
    rows = [{"text": "a"}, {"text": "b"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.json").write_text(json.dumps({"data": rows}))
    load_table(str(tmp_path / "t.jsonl")).to_parquet(str(tmp_path / "t.parquet"))
    for name in ("t.jsonl", "t.json", "t.parquet"):
        assert load_table(str(tmp_path / name)).to_list() == rows, name
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match=r"bad.json: expected a JSON list of records"):
        load_table(str(tmp_path / "bad.json"))


def test_save_to_disk_folders_are_tables_wherever_a_file_is(tmp_path):
    """A `datasets` save_to_disk folder (a Dataset, or a DatasetDict read at the split asked for) reads like a
    file, in every loader built on `table_records` (SFT data, preference pairs, prompts, pretraining text)."""
    import datasets

    from align.data.preferences import load_preferences
    from align.prompts import load_prompts

    rows = [{"id": "a", "prompt": "Hi?", "is_safety": False}, {"id": "b", "prompt": "Bye?", "is_safety": True}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1]), "test": datasets.Dataset.from_list(rows)}
                         ).save_to_disk(str(tmp_path / "splits"))  # fmt: skip
    assert load_table(str(tmp_path / "one")).to_list() == rows
    assert load_table(str(tmp_path / "splits")).to_list() == rows[:1]
    assert load_table(str(tmp_path / "splits"), split="test").to_list() == rows
    assert [p["id"] for p in load_prompts(str(tmp_path / "one"))] == ["a", "b"]
    assert load_prompts(str(tmp_path / "splits"), split="test")[1]["is_safety"] is True
    pairs = [{"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi?\n\nAssistant: No."}]
    datasets.Dataset.from_list(pairs).save_to_disk(str(tmp_path / "hh"))
    assert len(load_preferences(str(tmp_path / "hh"), target="helpfulness")) == 1
    with pytest.raises(ValueError, match=r"dataset: .*splits has no split 'validation'; it has \['test', 'train'\]"):
        load_table(str(tmp_path / "splits"), split="validation")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=r"plain is a folder but not one written by datasets' save_to_disk"):
        load_table(str(tmp_path / "plain"))


def test_shipped_configs_and_the_demo_tokenizer_are_found_from_any_folder(tmp_path, monkeypatch):
    """The defaults name `recipes/configs/...` and `data/tokenizer`; a console command runs from the user's own
    folder, where a file of the user's own under that name still wins."""
    from align.config import load_yaml_config
    from align.data import load_tokenizer
    from align.io import shipped_path
    from align.sft import SFTConfig

    monkeypatch.chdir(tmp_path)
    assert load_yaml_config("recipes/configs/sft/world_small.yaml", SFTConfig)["dataset"] == "world"
    assert len(load_tokenizer("data/tokenizer")) > 0
    assert shipped_path("recipes/configs/nope.yaml") == Path("recipes/configs/nope.yaml")  # named as given if absent
    (tmp_path / "recipes" / "configs" / "sft").mkdir(parents=True)
    (tmp_path / "recipes" / "configs" / "sft" / "world_small.yaml").write_text("lr: 0.5\n")
    assert load_yaml_config("recipes/configs/sft/world_small.yaml", SFTConfig) == {"lr": 0.5}
