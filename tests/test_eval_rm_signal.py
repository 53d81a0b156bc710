"""eval/experiments/rm_signal.py: what a reward model rewards among rejection sampling's candidates."""

import json
import runpy
from pathlib import Path

import pytest

from align.world import World
from align.world.gold import gold_helpfulness

RM_SIGNAL = runpy.run_path(str(Path(__file__).resolve().parents[1] / "eval" / "experiments" / "rm_signal.py"))


def write_kept(path: Path, score) -> None:
    """kept.jsonl of 6 arithmetic prompts, 4 candidates each (right, wrong, a longer wrong one, a refusal), scored by
    `score(candidate, right)`."""
    prompts = [p for p in World(seed=0).prompts(200, "train", seed=1) if p.kind == "arithmetic"][:6]
    records = []
    for prompt in prompts:
        right = str(prompt.key["answer"])
        candidates = [right, str(prompt.key["answer"] + 3), f"I think it is {prompt.key['answer'] + 7}.",
                      "I can't help with that."]  # fmt: skip
        records.append({**prompt.to_record(), "candidates": candidates,
                        "helpfulness_scores": [score(c, right) for c in candidates]})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_reward_model_that_knows_the_sums_picks_the_best(tmp_path):
    write_kept(tmp_path / "kept.jsonl", lambda text, right: 1.0 if text == right else 0.0)
    row = RM_SIGNAL["rm_signal"](tmp_path / "kept.jsonl")["arithmetic"]
    assert row["prompts"] == 6 and row["r_gold"] > 0.5
    assert row["picked_gold"] == pytest.approx(row["oracle_gold"]) and row["picked_gold"] > row["mean_gold"]


def test_a_reward_model_that_counts_words_is_told_apart(tmp_path):
    write_kept(tmp_path / "kept.jsonl", lambda text, right: float(len(text.split())))
    row = RM_SIGNAL["rm_signal"](tmp_path / "kept.jsonl", answers_only=True)["arithmetic"]
    assert row["r_length"] == pytest.approx(1.0) and row["r_gold"] < 0.5
    assert row["picked_gold"] < row["oracle_gold"]
    assert row["r_refusal"] != row["r_refusal"]  # nan: no refusal left among the answers
    prompt = [p for p in World(seed=0).prompts(200, "train", seed=1) if p.kind == "arithmetic"][0]
    assert gold_helpfulness(prompt, "I can't help with that.") < gold_helpfulness(prompt, str(prompt.key["answer"]))
