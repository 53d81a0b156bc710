"""A round's `dpo` stage (rounds >= `dpo_from_round`, Llama 3's recipe): DPO from the round's rejection-sampled
model (the previous policy when rejection sampling is off) on the round's preference pairs, both data sets pooled,
or every round's so far with `dpo_pairs: all` (`align.dpo`). The frozen reference is the model DPO starts from, or
round 0's chat model in every round with `dpo_reference: sft`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import recorded_config
from .config import TARGETS
from .records import stage_done_facts

if TYPE_CHECKING:
    from .runner import Rounds


def pairs(rounds: Rounds, n: int) -> list[str]:
    """The collected pair files round `n`'s DPO trains on: the round's own, or rounds 1..n's (`dpo_pairs`)."""
    first = 1 if rounds.config.dpo_pairs == "all" else n
    return [batch for target in TARGETS for batch in rounds.collected(n, target, first)]


def round_options(rounds: Rounds) -> dict[str, Any]:
    """The rounds options a round's DPO depends on (recorded with it; a rerun says when they changed)."""
    from ..dpo import DPOConfig

    config = rounds.config
    return {
        "dpo_pairs": config.dpo_pairs,
        "dpo_reference": config.dpo_reference,
        "seed": config.seed,
        **rounds.settings_option("dpo", DPOConfig, config.dpo_config),
    }


def run(rounds: Rounds, n: int, policy: Path, models: dict[str, Path], folder: Path) -> dict[str, Any]:
    """DPO of `policy` on round `n`'s pairs against the reference `dpo_reference` names, into `folder`; the round's
    reward models are not used (DPO needs none). Returns the stage's facts for the manifest."""
    from ..dpo import DPOConfig, dpo

    dataset = pairs(rounds, n)
    reference = rounds.sft_model if rounds.config.dpo_reference == "sft" else policy
    config = rounds.settings(
        "dpo",
        DPOConfig,
        rounds.config.dpo_config,
        model=str(policy),
        reference=str(reference),
        output_dir=str(folder),
        dataset=",".join(dataset),
        data_format="trl",  # the collected pairs are saved in TRL's format
        world_seed=rounds.config.world_seed,
        seed=rounds.config.seed + n,
    )
    final = dpo(config)
    return {"final": str(final), "parent": str(policy), "pairs": dataset, "config": recorded_config(config),
            **stage_done_facts(folder)}  # fmt: skip
