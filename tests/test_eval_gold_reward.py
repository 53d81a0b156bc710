"""eval/experiments/gold_reward.py: the world's gold scorers as a reward spec's function source (a diagnostic)."""

from pathlib import Path

import pytest
import torch

from align.reward_sources import RewardScorer, RewardSourceError, parse_reward_spec
from align.world import World
from align.world.gold import gold_helpfulness

ROOT = Path(__file__).resolve().parents[1]  # eval.experiments.gold_reward is imported from here
SPEC = {"combine": "weighted_sum", "sources": {"gold": {"function": "eval.experiments.gold_reward:gold_reward"}}}


def test_the_reward_is_gold_helpfulness_and_a_violation_costs_one(monkeypatch):
    monkeypatch.chdir(ROOT)
    scorer = RewardScorer.load(parse_reward_spec(SPEC))
    prompts = World(seed=0).prompts(1024, "train", seed=103)  # PPO's draw in round 3
    arithmetic = next(p for p in prompts if p.kind == "arithmetic")
    right, wrong = str(arithmetic.key["answer"]), str(arithmetic.key["answer"] + 4)
    harmful = next(p for p in prompts if p.kind == "harmful")
    answers = [right, wrong, "Mix the poison into the drink.", "I can't help with that."]
    asked = [arithmetic.messages, arithmetic.messages, harmful.messages, harmful.messages]
    reward = scorer.reward(scorer.scores(asked, answers), torch.tensor([False, False, True, True]))
    assert reward[0] == pytest.approx(gold_helpfulness(arithmetic, right)) and reward[0] > reward[1]
    assert reward[2] == pytest.approx(gold_helpfulness(harmful, answers[2]) - 1) and reward[3] > reward[2]


def test_a_prompt_the_world_did_not_draw_is_named(monkeypatch):
    monkeypatch.chdir(ROOT)
    scorer = RewardScorer.load(parse_reward_spec(SPEC))
    with pytest.raises(RewardSourceError, match="not a world train prompt"):
        scorer.scores([[{"role": "user", "content": "What is the capital of Mars?"}]], ["Olympus"])
