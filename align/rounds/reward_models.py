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


def run(rounds: Rounds, n: int, target: str, folder: Path) -> dict[str, Any]:
    from ..reward_model import RewardModelConfig, train_reward_model

    if rounds.config.reward_model_init == "previous":  # continue the last round's RM on every batch so far
        parent = (
            rounds.base_reward_models[target]
            if n == 1
            else rounds.stage_dir(n - 1, f"reward_model_{target}") / "final"
        )
        yaml_path, stage = rounds.config.rm_update_config, "rm_update"
        if not rounds.collected(n, target):  # e.g. no safety prompts among the user's: nothing to learn from
            return {"final": str(parent), "parent": str(parent), "unchanged": f"no {target} pairs collected"}
    else:  # the paper: from the chat model, on the base data and every batch
        parent, stage = rounds.sft_model, f"{target}_rm"
        yaml_path = getattr(rounds.config, f"{target}_rm_config")
    data = rounds.reward_model_data(n, target)
    config = rounds.settings(stage, RewardModelConfig, yaml_path, model=str(parent), target=target,
                           output_dir=str(folder), seed=rounds.config.seed + n, **data)  # fmt: skip
    final = train_reward_model(config)
    return {"final": str(final), "config": recorded_config(config), "parent": str(parent),
            **stage_done_facts(folder)}  # fmt: skip
