"""A round's `reward_model_helpfulness` / `reward_model_safety` stages: both reward models trained on every batch
collected so far, continuing the previous round's (`reward_model_init: previous`) or from the chat model with the
base data too (`sft`, the paper; docs/method.md §8)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import recorded_config
from .records import stage_done_facts

if TYPE_CHECKING:
    from .runner import Rounds


def settings_source(rounds: Rounds, target: str) -> tuple[str, str]:
    """The stage name of the `--<stage>.*` overrides and the YAML file a round's `target` reward model takes its
    settings from: `rm_update` when continuing the previous round's, `<target>_rm` when trained afresh."""
    if rounds.config.reward_model_init == "previous":
        return "rm_update", rounds.config.rm_update_config
    return f"{target}_rm", getattr(rounds.config, f"{target}_rm_config")


def round_options(rounds: Rounds, target: str) -> dict[str, Any]:
    """What a round's `target` reward model takes from its YAML file and overrides, and the run seed its own
    derives from (a rerun says when they changed)."""
    from ..reward_model import RewardModelConfig

    stage, yaml_path = settings_source(rounds, target)
    return {"seed": rounds.config.seed, **rounds.settings_option(stage, RewardModelConfig, yaml_path)}


def run(rounds: Rounds, n: int, target: str, folder: Path) -> dict[str, Any]:
    from ..reward_model import RewardModelConfig, train_reward_model

    stage, yaml_path = settings_source(rounds, target)
    if rounds.config.reward_model_init == "previous":  # continue the last round's RM on every batch so far
        parent = (
            rounds.base_reward_models[target]
            if n == 1
            else rounds.stage_dir(n - 1, f"reward_model_{target}") / "final"
        )
        if not rounds.collected(n, target):  # e.g. no safety prompts among the user's: nothing to learn from
            return {"final": str(parent), "parent": str(parent), "unchanged": f"no {target} pairs collected"}
    else:  # the paper: from the chat model, on the base data and every batch
        parent = rounds.sft_model
    data = rounds.reward_model_data(n, target)
    config = rounds.settings(stage, RewardModelConfig, yaml_path, model=str(parent), target=target,
                           output_dir=str(folder), seed=rounds.config.seed + n, **data)  # fmt: skip
    final = train_reward_model(config)
    return {"final": str(final), "config": recorded_config(config), "parent": str(parent),
            **stage_done_facts(folder)}  # fmt: skip
