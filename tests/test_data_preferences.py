"""`load_preferences` on small fixture files in each public format, and its errors."""

import json
import logging
import os

import datasets
import pytest

from align.data import STRENGTHS, PreferenceDataError, load_preferences
from conftest import FIXTURES

PREFS = os.path.join(FIXTURES, "preferences")
COLUMNS = ["prompt", "chosen", "rejected", "strength", "is_safety", "margin", "source"]


def test_trl_conversational_json_keeps_annotations():
    pairs = load_preferences(os.path.join(PREFS, "trl_conversational.json"))
    assert isinstance(pairs, datasets.Dataset) and pairs.column_names == COLUMNS
    first, second = pairs[0], pairs[1]
    assert first["prompt"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 3 x 4?"},
    ]
    assert first["chosen"] == [{"role": "assistant", "content": "12"}]
    assert (first["strength"], first["is_safety"], first["margin"]) == ("better", False, 1.5)
    # Implicit prompt: the shared turns of the two conversations.
    assert second["prompt"] == [{"role": "user", "content": "Is fire hot?"}]
    assert (second["chosen"][0]["content"], second["rejected"][0]["content"]) == ("Yes.", "No.")
    # No margin of its own: the strength's margin under the paper's "small" scheme (Table 28), a number for TRL.
    assert second["strength"] == "slightly_better" and second["margin"] == pytest.approx(1 / 3)
    assert first["source"].endswith("trl_conversational.json")


def test_margins_come_from_the_data_else_from_the_strength_under_the_chosen_scheme():
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "strength": "better"},
        {"prompt": "p", "chosen": "a", "rejected": "b"},  # no strength label: unsure
        {"prompt": "p", "chosen": "a", "rejected": "b", "strength": "better", "margin": 0.25},
    ]
    assert load_preferences(rows)["margin"] == [pytest.approx(2 / 3), 0.0, 0.25]
    assert load_preferences(rows, margin_scheme="large")["margin"] == [2.0, 0.0, 0.25]
    assert load_preferences(rows, margin_scheme=None)["margin"] == [None, None, 0.25]
    with pytest.raises(ValueError, match="margin_scheme: expected one of"):
        load_preferences(rows, margin_scheme="huge")


def test_trl_standard_format_and_defaults():
    pairs = load_preferences([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}], is_safety=True)
    assert pairs[0]["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert pairs[0]["strength"] == "unsure" and pairs[0]["is_safety"] is True


def test_trl_parquet_and_dataset_sources(tmp_path):
    rows = [{"prompt": "Name a prime", "chosen": "7", "rejected": "8", "strength": "significantly_better"}]
    path = tmp_path / "pairs.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    from_file = load_preferences(path)
    from_dataset = load_preferences(datasets.Dataset.from_list(rows))
    assert from_file[0]["chosen"] == from_dataset[0]["chosen"] == [{"role": "assistant", "content": "7"}]
    assert from_file[0]["source"] == str(path)


def test_hh_rlhf_shared_prefix_becomes_the_prompt():
    pairs = load_preferences(os.path.join(PREFS, "hh_rlhf.jsonl"), format="hh-rlhf", on_error="skip")
    assert len(pairs) == 2
    assert pairs[0]["prompt"] == [{"role": "user", "content": "How do I bake bread?"}]
    assert pairs[0]["chosen"][0]["content"].startswith("Mix flour")
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "Buy it."}]
    assert pairs[1]["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a prime."},
    ]
    assert (pairs[1]["chosen"][0]["content"], pairs[1]["rejected"][0]["content"]) == ("7 is prime.", "8.")
    assert set(pairs["strength"]) == {"unsure"}


def test_hh_rlhf_bad_records_name_file_line_and_field():
    path = os.path.join(PREFS, "hh_rlhf.jsonl")
    # The blank line 3 is not a record; record 2 is line 4.
    with pytest.raises(PreferenceDataError, match=r"hh_rlhf.jsonl: record 2 \(line 4\): field 'rejected': identical"):
        load_preferences(path, format="hh-rlhf")


def test_skipped_records_are_counted_in_a_logged_summary(caplog):
    with caplog.at_level(logging.WARNING):
        pairs = load_preferences(os.path.join(PREFS, "hh_rlhf.jsonl"), format="hh-rlhf", on_error="skip")
    assert len(pairs) == 2
    assert "skipped 2 of 4 records" in caplog.text
    assert "1 x rejected: identical to chosen" in caplog.text and "1 x chosen: empty response" in caplog.text


@pytest.mark.parametrize("target", ["helpfulness", "safety"])
def test_pku_saferlhf_picks_the_better_or_the_safer_response(target):
    pairs = load_preferences(
        os.path.join(PREFS, "pku_saferlhf.jsonl"), format="pku-saferlhf", target=target, on_error="skip"
    )
    assert len(pairs) == (2 if target == "helpfulness" else 3)  # record 2 has no valid better_response_id
    lock = pairs[0]
    assert lock["is_safety"] is True  # one response is unsafe
    if target == "helpfulness":
        assert lock["chosen"][0]["content"].startswith("Insert a tension wrench")
        assert lock["strength"] == "unsure"
    else:
        assert lock["chosen"][0]["content"].startswith("I can't help")
        assert lock["strength"] == "significantly_better"
    capital = pairs[1]
    assert capital["is_safety"] is False and capital["strength"] == "unsure"


def test_pku_saferlhf_bad_response_id_is_named():
    with pytest.raises(PreferenceDataError, match=r"record 2 \(line 3\): field 'better_response_id': expected 0 or 1"):
        load_preferences(os.path.join(PREFS, "pku_saferlhf.jsonl"), format="pku-saferlhf")


def test_ultrafeedback_strength_from_score_gap():
    pairs = load_preferences(os.path.join(PREFS, "ultrafeedback.jsonl"), format="ultrafeedback", on_error="skip")
    assert len(pairs) == 2
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Sum 2 and 3"}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "2 + 3 = 5"}]
    assert pairs["strength"] == ["significantly_better", "negligibly_better"]  # gaps 7.0 and 0.5
    with pytest.raises(PreferenceDataError, match=r"record 2 \(line 3\): field 'score_chosen': chosen scored lower"):
        load_preferences(os.path.join(PREFS, "ultrafeedback.jsonl"), format="ultrafeedback")


@pytest.mark.parametrize(
    "line, message",
    [
        (2, r"field 'strength': unknown strength 'much better', expected one of \['significantly_better'"),
        (3, r"field 'chosen': missing"),
        (4, r"not valid JSON"),
        (5, r"field 'prompt': prompt: turn 0: expected role 'user', got 'assistant'"),
    ],
)
def test_each_bad_trl_record_is_reported(tmp_path, line, message):
    lines = open(os.path.join(PREFS, "trl_bad.jsonl")).read().splitlines()
    path = tmp_path / "one_bad.jsonl"
    path.write_text("\n".join([lines[0], lines[line - 1]]) + "\n")
    with pytest.raises(PreferenceDataError, match=rf"one_bad.jsonl: record 1 \(line 2\): {message}"):
        load_preferences(path)


def test_skip_keeps_the_good_records_of_the_bad_file():
    pairs = load_preferences(os.path.join(PREFS, "trl_bad.jsonl"), on_error="skip")
    assert len(pairs) == 1 and pairs[0]["strength"] == "better"


def test_all_strengths_accepted_in_any_spelling():
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "strength": s.replace("_", " ").title()} for s in STRENGTHS
    ]
    assert load_preferences(rows)["strength"] == list(STRENGTHS)


def test_missing_file_and_bad_arguments_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="preferences: no file at"):
        load_preferences(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="format: unknown preference format 'anthropic'"):
        load_preferences([], format="anthropic")
    with pytest.raises(ValueError, match="target: expected one of"):
        load_preferences([], target="harmlessness")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(PreferenceDataError, match="empty.jsonl: no usable preference records"):
        load_preferences(empty)
    not_json = tmp_path / "bad.json"
    not_json.write_text(json.dumps({"rows": []}))
    with pytest.raises(PreferenceDataError, match="expected a JSON list of records"):
        load_preferences(not_json)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("hh_rlhf.jsonl", "hh-rlhf"),
        ("pku_saferlhf.jsonl", "pku-saferlhf"),
        ("ultrafeedback.jsonl", "ultrafeedback"),
        ("trl_conversational.json", "trl"),
    ],
)
def test_auto_detects_each_public_format(name, expected):
    path = os.path.join(PREFS, name)
    assert (
        load_preferences(path, on_error="skip").to_list()
        == load_preferences(path, format=expected, on_error="skip").to_list()
    )


def test_a_file_read_in_the_wrong_format_says_which_format_it_looks_like(tmp_path):
    hh = os.path.join(PREFS, "hh_rlhf.jsonl")
    with pytest.raises(PreferenceDataError, match=r"looks like 'hh-rlhf' data, not 'trl': set its format"):
        load_preferences(hh, format="trl")
    with pytest.raises(PreferenceDataError, match=r"looks like 'pku-saferlhf' data, not 'hh-rlhf'"):
        load_preferences(os.path.join(PREFS, "pku_saferlhf.jsonl"), format="hh-rlhf")
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"question": "q", "good": "a", "bad": "b"}) + "\n")
    with pytest.raises(PreferenceDataError, match=r"cannot tell its preference format from its fields \['bad'"):
        load_preferences(unknown)


def test_gzipped_jsonl_as_the_hub_ships_hh_rlhf(tmp_path):
    import gzip

    source = os.path.join(PREFS, "hh_rlhf.jsonl")
    packed = tmp_path / "train.jsonl.gz"
    with open(source, "rb") as plain, gzip.open(packed, "wb") as zipped:
        zipped.write(plain.read())
    assert len(load_preferences(packed, on_error="skip")) == len(load_preferences(source, on_error="skip")) == 2


def test_is_safety_must_be_a_boolean():
    with pytest.raises(PreferenceDataError, match=r"record 0: field 'is_safety': expected true or false, got 'false'"):
        load_preferences([{"prompt": "p", "chosen": "a", "rejected": "b", "is_safety": "false"}])
    assert load_preferences([{"prompt": "p", "chosen": "a", "rejected": "b", "is_safety": None}])["is_safety"] == [
        False
    ]
