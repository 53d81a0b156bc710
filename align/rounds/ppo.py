"""A round's `ppo` stage (rounds >= `ppo_from_round`): PPO from the round's rejection-sampled model, which is
also pi_0 of the KL penalty, scored like rejection sampling (docs/method.md §7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import DONE_MARKER, recorded_config
from .records import stage_done_facts

if TYPE_CHECKING:
    from .runner import Rounds

# Round n's PPO draws its world prompts with seed PPO_PROMPT_SEED_BASE + n, apart from rejection sampling's (seed n).
PPO_PROMPT_SEED_BASE = 100


def round_options(rounds: Rounds) -> dict[str, Any]:
    """The rounds options a round's PPO depends on (recorded with it; a rerun says when they changed)."""
    from ..ppo import PPOConfig

    config = rounds.config
    return {"reward": config.reward_of("ppo"), "seed": config.seed,
            **rounds.settings_option("ppo", PPOConfig, config.ppo_config)}


def run(rounds: Rounds, n: int, policy: Path, models: dict[str, Path], folder: Path) -> dict[str, Any]:
    from ..ppo import PPOConfig, PPOTrainer
    from ..prompts import stage_prompts, world_gold_scorer

    config = rounds.settings(
        "ppo",
        PPOConfig,
        rounds.config.ppo_config,
        policy=str(policy),
        reference=str(policy),
        **rounds.reward_fields(models, "ppo"),
        output_dir=str(folder),
        world_seed=rounds.config.world_seed,
        world_prompt_seed=PPO_PROMPT_SEED_BASE + n,
        seed=rounds.config.seed + n,
        **rounds.prompt_source(),
    )
    prompts = stage_prompts(config)
    final = PPOTrainer.from_config(config, prompts, gold_scorer=world_gold_scorer(prompts)).train()
    done = json.loads((folder / DONE_MARKER).read_text())
    return {
        "final": str(final),
        "parent": str(policy),
        "config": recorded_config(config),
        **{k: v for k, v in done.items() if k.startswith("objective/")},
        **stage_done_facts(folder),
    }
