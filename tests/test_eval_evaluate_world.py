"""eval/evaluate_world.py: gold metrics of checkpoints, and the paired gain of each over the one before."""

import runpy
from pathlib import Path

import pytest

EVALUATE_WORLD = runpy.run_path(str(Path(__file__).resolve().parents[1] / "eval" / "evaluate_world.py"))


def test_paired_gain_is_the_difference_of_the_means_with_an_interval_around_it(pretrained, chat_model, capsys):
    results = EVALUATE_WORLD["main"]([str(pretrained), str(chat_model), "--prompts", "40", "--prompt_seed", "1",
                                      "--paired"])  # fmt: skip
    before, after = results[str(pretrained)], results[str(chat_model)]
    gain, low, high = after["gold_helpfulness_gain"]
    assert gain == pytest.approx(after["gold_helpfulness"] - before["gold_helpfulness"])
    assert low <= gain <= high and "gold_helpfulness_gain" not in before
    assert f"minus {str(pretrained)[-50:]}: gold helpfulness {gain:+.4f}" in capsys.readouterr().out


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        EVALUATE_WORLD["main"]([str(tmp_path / "nowhere"), "--paired"])
    assert exited.value.code == 2 and "nowhere" in capsys.readouterr().err
