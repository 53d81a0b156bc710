"""PPO with the safety-gated reward and a KL penalty (docs/method.md §7; docs/stages/ppo.md) with `align.ppo`.

    align ppo --config recipes/configs/ppo/world_small.yaml
    accelerate launch --num_processes 8 -m align ppo --config recipes/configs/ppo/7b.yaml --policy ...
    python recipes/ppo.py --config recipes/configs/ppo/world_small.yaml      # the same, as a script

Trains the policy against whiten(logit(R_c)) - beta * KL (per token) with a value model initialised from the
helpfulness reward model; writes `<output_dir>/metrics.jsonl` (TRL's metric names, plus `objective/gold` on
the world: the gold reward next to the reward models' score), `checkpoint-N/` and `final/`. A run resumes from
its last checkpoint. `--export_llama DIR` also writes the final policy as a plain transformers Llama directory.
"""

from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState

from align.checkpoint import EXPORT_LLAMA_HELP, export_llama
from align.config import ONE_LINE_ERRORS, end_processes, exit_with_error, parse_config
from align.ppo import PPOConfig, PPOTrainer
from align.prompts import stage_prompts, world_gold_scorer


@dataclass
class RecipeConfig(PPOConfig):
    export_llama: str | None = field(default=None, metadata={"help": EXPORT_LLAMA_HELP})


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(RecipeConfig, argv, prog, description=__doc__)
    try:
        prompts = stage_prompts(config)
        final = PPOTrainer.from_config(config, prompts, gold_scorer=world_gold_scorer(prompts)).train()
        if config.export_llama and PartialState().is_main_process:
            print(f"plain Llama directory: {export_llama(final, config.export_llama)}")
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    print(f"PPO policy: {final} (metrics: {Path(config.output_dir) / 'metrics.jsonl'})")
    end_processes()


if __name__ == "__main__":
    main()
