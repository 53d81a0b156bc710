"""The adaptive KL controller and the reward-hacking guard, alone and in PPO."""

import json
from itertools import count

import pytest
import torch
from test_ppo import PROMPTS, ppo_config, tiny_models

from align.io import read_jsonl
from align.ppo import PPOTrainer
from align.reward_guard import AdaptiveKLController, RewardHackingGuard, slope
from align.reward_sources import RewardScorer, parse_reward_spec


def test_the_kl_coefficient_follows_ziegler_et_al():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert controller.update(6.0, 512) == pytest.approx(0.1)  # on target: unchanged
    assert controller.update(9.0, 512) == pytest.approx(0.1 * (1 + 0.2 * 512 / 10000))  # error clipped to +0.2
    before = controller.value
    assert controller.update(5.4, 1000) == pytest.approx(before * (1 - 0.1 * 1000 / 10000))  # 5.4 / 6 - 1 = -0.1


def test_the_guard_fires_on_a_rising_reward_and_a_falling_judge_or_a_large_kl():
    assert slope([1.0, 2.0, 3.0]) == pytest.approx(1.0) and slope([3.0, 3.0]) == 0.0
    guard = RewardHackingGuard(window=3)
    assert guard.observe(1, 5, 0.1) is None and guard.observe(2, 4, 0.1) is None  # not a window yet
    assert guard.observe(3, 3, 0.1) == (
        "over the last 3 iterations the optimised reward rose (+1.0000 per iteration) while the held-out judge "
        "fell (-1.0000)"
    )
    both_rise = RewardHackingGuard(window=3)
    assert all(both_rise.observe(x, x, 0.1) is None for x in range(6))
    assert RewardHackingGuard(window=3, max_kl=5.0).observe(1.0, None, 7.5) == "KL 7.500 above guard_max_kl 5.0"
    assert guard.judge_mean() == pytest.approx(4.0) and both_rise.judge_mean() == pytest.approx(4.0)
    assert RewardHackingGuard(window=3).judge_mean() is None  # no full window yet
    resumed = RewardHackingGuard(window=3)
    resumed.load_state(guard.state())
    assert resumed.history == guard.history


def test_ppo_stops_when_the_guard_fires_and_steers_the_kl_coefficient(tmp_path, tokenizer):
    """A reward that rises every iteration and a held-out judge that falls: with guard_action 'stop' the run
    ends at the iteration the window shows it, saying why in DONE.json, and `best/` holds the policy of the
    judge's best window; the adaptive controller moves kl_coef."""
    spec = {"combine": "weighted_sum", "sources": {"up": {"function": "m:up"}, "down": {"function": "m:down",
                                                                                         "weight": 0}}}  # fmt: skip
    rising, falling = count(), count()
    sources = {"up": lambda prompts, answers: torch.full((len(answers),), float(next(rising) // 2)),
               "down": lambda prompts, answers: torch.full((len(answers),), -float(next(falling) // 2))}  # fmt: skip
    config = ppo_config(tmp_path, reward=json.dumps(spec), helpfulness_rm="", safety_rm="", shared_value_head=True, batch_size=4, mini_batch_size=4,
                        num_iterations=8, save_steps=100, guard_judge="down", guard_window=3, guard_action="stop",
                        guard_keep_best=True, kl_target=0.5, kl_horizon=100)  # fmt: skip
    policy, reference, _, _, _ = tiny_models(tokenizer)
    reward = RewardScorer(parse_reward_spec(config.reward), sources)
    final = PPOTrainer(config, policy, reference, None, reward, tokenizer, PROMPTS).train()
    done = json.loads((final.parent / "DONE.json").read_text())
    assert done["iterations"] == 3 and "while the held-out judge fell" in done["stopped_by_guard"]
    # best/: the end of the first (and only) full window, ranked by the judge's mean over it: (0 + 0 - 1) / 3.
    assert done["best"] == {"iteration": 3, "judge_mean": pytest.approx(-1 / 3), "window": 3,
                            "path": str(final.parent / "best")}  # fmt: skip
    assert (final.parent / "best" / "model.safetensors").is_file()
    logged = read_jsonl(tmp_path / "ppo" / "metrics.jsonl")
    assert [r["guard/alarm"] for r in logged] == [0.0, 0.0, 1.0]
    coefficients = [r["objective/kl_coef"] for r in logged]
    assert coefficients[0] == config.kl_coef and len(set(coefficients)) == 3  # steered after every iteration


def test_guard_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"guard_judge: 'judge' is not a source of the reward spec"):
        ppo_config(tmp_path, guard_judge="judge")
    with pytest.raises(ValueError, match=r"guard_judge: 'helpfulness' is optimised \(weight 1.0\)"):
        ppo_config(tmp_path, guard_judge="helpfulness")
    with pytest.raises(ValueError, match="guard_action: expected 'warn' or 'stop'"):
        ppo_config(tmp_path, guard_action="panic")
    with pytest.raises(ValueError, match="guard_keep_best: needs guard_judge"):
        ppo_config(tmp_path, guard_keep_best=True)
    with pytest.raises(ValueError, match="kl_target: must be positive"):
        ppo_config(tmp_path, kl_target=0.0)
