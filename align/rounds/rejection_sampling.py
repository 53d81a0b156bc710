"""A round's `rejection_sampling` stage: best-of-K answers of the previous policy under the round's reward models
(or the rounds' reward spec), then SFT of that policy on the kept answers of this round pooled with the earlier
rounds' (docs/method.md §6); its temperature per round comes from `rejection_sampling_temperatures`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import DONE_MARKER, recorded_config
from .config import DEMO_TEMPERATURES
from .records import stage_done_facts

if TYPE_CHECKING:
    from .runner import Rounds


def restarts(rounds: Rounds, n: int) -> bool:
    """Whether round `n`'s fine-tune starts again from round 0's chat model (`rejection_sampling_restart_round`)."""
    restart = rounds.config.rejection_sampling_restart_round
    return bool(restart) and n >= restart


def round_options(rounds: Rounds, n: int) -> dict[str, Any]:
    """The options round `n`'s rejection sampling depends on (recorded with it; a rerun says when they changed):
    the reward it scores with (the demo's default changed on 2026-12-05), whether its fine-tune restarts from the
    chat model (not the restart round itself: moving it past this round changes nothing here), the run seed its
    own derives from and its YAML file's settings."""
    from ..rejection_sampling import RejectionSamplingConfig

    config = rounds.config
    return {"reward": config.reward, "restarts_from_chat_model": restarts(rounds, n), "seed": config.seed,
            **rounds.settings_option("rejection_sampling", RejectionSamplingConfig, config.rejection_sampling_config)}  # fmt: skip


def temperature(rounds: Rounds, n: int) -> dict[str, float]:
    """Round `n`'s sampling temperature from `rejection_sampling_temperatures` (the last repeats), as a
    field of the stage's config; empty when the YAML's (or an override's) applies."""
    schedule = rounds.config.rejection_sampling_temperatures
    if schedule is None and not rounds.config.on_user_data:
        given = "temperature" in rounds.config.overrides.get("rejection_sampling", {})
        schedule = None if given else DEMO_TEMPERATURES
    if schedule is None:
        return {}
    temperatures = [float(t) for t in schedule.split(",")]
    return {"temperature": temperatures[min(n, len(temperatures)) - 1]}


def run(rounds: Rounds, n: int, policy: Path, models: dict[str, Path], folder: Path) -> dict[str, Any]:
    from ..rejection_sampling import RejectionSamplingConfig, finetune_settings, run_rejection_sampling
    from ..sft import SFTConfig, sft

    config = rounds.settings(
        "rejection_sampling",
        RejectionSamplingConfig,
        rounds.config.rejection_sampling_config,
        **temperature(rounds, n),
        policy=str(policy),
        **rounds.reward_fields(models),
        output_dir=str(folder),
        world_seed=rounds.config.world_seed,
        world_prompt_seed=n,
        seed=rounds.config.seed + n,
        **rounds.prompt_source(),
    )
    kept = run_rejection_sampling(config)
    earlier = range(1, n) if rounds.config.rejection_sampling_pool == "all" else ()
    pool = [str(rounds.stage_dir(r, "rejection_sampling") / "kept.jsonl") for r in earlier]
    # A restart learns the pooled answers afresh from the chat model: the policy that sampled them carries every
    # earlier round's fine-tune, and continuing it drifts (eval/experiments/rounds_compound.md, LLL).
    start = rounds.sft_model if restarts(rounds, n) else policy
    finetune = SFTConfig(
        model=str(start),
        output_dir=str(folder / "sft"),
        dataset=",".join([str(kept), *pool]),
        **finetune_settings(config, rounds.processes.num_processes),
    )
    final = sft(finetune)
    done = json.loads((folder / DONE_MARKER).read_text())
    return {
        "final": str(final),
        "kept": str(kept),
        "pooled": pool,
        "parent": str(start),
        "sampled_by": str(policy),
        "mean_best_reward": done.get("mean_best_reward"),
        "config": recorded_config(config),
        **stage_done_facts(folder),
    }
