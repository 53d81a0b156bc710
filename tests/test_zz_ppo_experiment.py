"""Temporary: how much does the world PPO test's claim vary with the seed? (deleted after measuring)"""
import json

import torch

from align.ppo import PPOConfig, PPOTrainer
from align.prompts import load_prompts, world_gold_scorer


import pytest


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """The conftest chain (pretrain 150 steps, SFT, both RMs) with seed 1 instead of 0."""
    from align.pretrain import PretrainConfig, pretrain
    from align.sft import SFTConfig, sft

    out = tmp_path_factory.mktemp("seed1")
    pre = pretrain(PretrainConfig(output_dir=str(out / "pre"), model_preset="tiny", seq_length=128,
        per_device_batch_size=8, max_steps=150, warmup_steps=10, lr=3e-3, save_steps=1000, logging_steps=50,
        world_documents=6000, seed=1))
    return sft(SFTConfig(model=str(pre), output_dir=str(out / "sft"), world_dialogues=400, max_length=512,
        num_train_epochs=2, lr=3e-3, per_device_batch_size=8, gradient_accumulation_steps=1, logging_steps=10,
        save_steps=1000, warmup_ratio=0.05, seed=1))


@pytest.fixture(scope="module")
def reward_models(chat_model, tmp_path_factory):
    from align.reward_model import RewardModelConfig, train_reward_model

    out = tmp_path_factory.mktemp("rm1")
    return {t: train_reward_model(RewardModelConfig(model=str(chat_model), target=t, output_dir=str(out / t),
        world_pairs=3000, max_length=256, num_train_epochs=2, lr=1e-3, per_device_batch_size=16,
        gradient_accumulation_steps=1, logging_steps=20, save_steps=1000, seed=1)) for t in ("helpfulness", "safety")}


def paired_scores(trainer, iterations):
    saved = trainer.iteration
    out = []
    for i in iterations:
        trainer.iteration = i
        _, stats = trainer.rollout(trainer.batch_prompts(i), {})
        out.append(stats["objective/scores"])
    trainer.iteration = saved
    return out


def test_measure(tmp_path, chat_model, reward_models):
    prompts = load_prompts("world", world_prompts=64, world_prompt_seed=7)
    results = {}
    for seed in (0, 1, 2):
        config = PPOConfig(
            output_dir=str(tmp_path / f"ppo{seed}"), policy=str(chat_model),
            helpfulness_rm=str(reward_models["helpfulness"]), safety_rm=str(reward_models["safety"]),
            num_iterations=10, batch_size=32, mini_batch_size=8, lr=2e-4, response_length=24, save_steps=100,
            forward_batch_size=32, seed=seed,
        )
        trainer = PPOTrainer.from_config(config, prompts, gold_scorer=world_gold_scorer(prompts))
        before = paired_scores(trainer, range(4))
        trainer.train()
        after = paired_scores(trainer, range(4))
        logged = [json.loads(line)["objective/scores"] for line in (tmp_path / f"ppo{seed}" / "metrics.jsonl").open()]
        results[seed] = dict(before=before, after=after, logged=logged,
                             first3=sum(logged[:3]) / 3, last3=sum(logged[-3:]) / 3)
        print("SEED", seed, json.dumps(results[seed]))
    (tmp_path.parent / "ppo_experiment.json").write_text(json.dumps(results))
