"""eval/annotator_agreement.py: annotators against the world's gold preference."""

import runpy
from pathlib import Path

import pytest

AGREEMENT = runpy.run_path(str(Path(__file__).resolve().parents[1] / "eval" / "annotator_agreement.py"))


def test_agreement_counts_labelled_and_unlabelled_pairs_by_kind():
    gold = {"h1": "a", "h2": "b", "h3": "a", "s1": "b"}  # "h4" is a gold tie: left out
    labelled = [
        {"id": "h1", "is_safety": False, "choice": "a"},
        {"id": "h2", "is_safety": False, "choice": "a"},
        {"id": "h3", "is_safety": False, "choice": None},  # an unparsable judge answer
        {"id": "h4", "is_safety": False, "choice": "b"},
        {"id": "s1", "is_safety": True, "choice": "b"},
    ]
    assert AGREEMENT["agreement"](labelled, gold) == {
        "helpfulness": {"labelled": 2, "unlabelled": 1, "agreement": 0.5},
        "safety": {"labelled": 1, "unlabelled": 0, "agreement": 1.0},
    }


def test_a_batch_of_the_world_labelled_by_the_world_and_a_reward_model(tmp_path, chat_model, reward_models):
    report = AGREEMENT["main"](["--policy", str(chat_model), "--rm", str(reward_models["helpfulness"]),
                                "--prompts", "16", "--out", str(tmp_path)])  # fmt: skip
    assert (tmp_path / "agreement.json").is_file() and report["gold_separates"] <= report["pairs"] <= 16
    for name in ("world annotator", f"rm:{reward_models['helpfulness']}"):
        table = report["annotators"][name]
        assert (
            sum(table[k]["labelled"] + table[k]["unlabelled"] for k in ("helpfulness", "safety"))
            == report["gold_separates"]
        )
        assert all(table[k]["agreement"] is None or 0 <= table[k]["agreement"] <= 1 for k in ("helpfulness", "safety"))


def test_a_missing_policy_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        AGREEMENT["main"](["--policy", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert stopped.value.code == 2 and "annotator_agreement: error: policy" in capsys.readouterr().err
