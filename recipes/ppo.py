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
from align.prompts import stage_prompts, world_gold_scorer


def main() -> None:
    config = parse_config(PPOConfig)
    try:
        prompts = stage_prompts(config)
        final = PPOTrainer.from_config(config, prompts, gold_scorer=world_gold_scorer(prompts)).train()
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(str(error))
    print(f"PPO policy: {final} (metrics: {Path(config.output_dir) / 'metrics.jsonl'})")


if __name__ == "__main__":
    main()
