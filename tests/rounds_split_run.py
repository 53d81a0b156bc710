"""A round's `collect` in the world and its `evaluate`, on as many processes as launched, for tests/test_rounds.py.

    accelerate launch --multi_gpu --num_processes 2 tests/rounds_split_run.py CONFIG.json

The `RoundsConfig` in CONFIG.json names the policy (`sft_model`) and the reward models; nothing is trained:
round 1 collects pairs sampled from the policy and labelled by the world, then evaluates the policy (also as
the previous round's policy and the SFT model) with greedy answers in batches of `eval_batch_size` prompts.
"""

import json
import sys
from pathlib import Path

import align.reports.rounds
from align.rounds import Rounds, RoundsConfig, collect

ROOT = Path(__file__).resolve().parents[1]
REPORT = vars(align.reports.rounds)


def main() -> None:
    config = RoundsConfig(**json.loads(Path(sys.argv[1]).read_text()))
    rounds = Rounds(config)
    policy = Path(config.sft_model)
    rounds.run_stage(1, "collect", lambda folder: collect.run(rounds, 1, policy, folder))
    checkpoints = {"policy": policy, "previous_policy": policy, "sft": policy,
                   "helpfulness": Path(config.helpfulness_rm), "safety": Path(config.safety_rm)}  # fmt: skip
    rounds.run_stage(1, "evaluate", lambda folder: REPORT["evaluate_round"](
        1, checkpoints, folder, {**rounds.evaluation_setup(), "max_new_tokens": 16}))  # fmt: skip


if __name__ == "__main__":
    main()
