"""PPO with the safety-gated reward and a KL penalty (PIPELINE.md §7) with `align.ppo`.

    python recipes/ppo.py --config recipes/configs/ppo/world_small.yaml
    accelerate launch --num_processes 8 recipes/ppo.py --config recipes/configs/ppo/7b.yaml --policy ...

Trains the policy against whiten(logit(R_c)) - beta * KL (per token) with a value model initialised from the
helpfulness reward model; writes `<output_dir>/metrics.jsonl` (TRL's metric names, plus `objective/gold` on
the world: the gold reward next to the reward models' score), `checkpoint-N/` and `final/`. A run resumes from
its last checkpoint.
"""

from pathlib import Path

from align.config import exit_with_error, parse_config
from align.ppo import PPOConfig, PPOTrainer
from align.prompts import load_prompts
from align.world import WorldPrompt, gold_reward


def main() -> None:
    config = parse_config(PPOConfig)
    try:
        prompts = load_prompts(
            config.prompts,
            world_seed=config.world_seed,
            world_prompts=config.world_prompts,
            world_prompt_seed=config.world_prompt_seed,
        )
        on_world = all("key" in record for record in prompts)
        gold = (lambda record, answer: gold_reward(WorldPrompt.from_record(record), answer)) if on_world else None
        trainer = PPOTrainer.from_config(config, prompts, gold_scorer=gold)
        final = trainer.train()
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(str(error))
    print(f"PPO policy: {final} (metrics: {Path(config.output_dir) / 'metrics.jsonl'})")


if __name__ == "__main__":
    main()
