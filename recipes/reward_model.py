"""Train a Llama 2 reward model (PIPELINE.md §5) and report its accuracy by preference strength.

    python recipes/reward_model.py --config recipes/configs/reward_model/world_small_helpfulness.yaml
    python recipes/reward_model.py --config recipes/configs/reward_model/world_small_safety.yaml
    accelerate launch recipes/reward_model.py --config recipes/configs/reward_model/7b.yaml --target safety

Writes `<output_dir>/final` (the reward model) and `<output_dir>/eval/` (metrics.json, predictions.jsonl,
accuracy_by_strength.png) on the held-out pairs `eval_data` (required with your own data; 'none' skips it;
the world's test pairs when the training data is the world's).
"""

import runpy
from pathlib import Path

from accelerate import PartialState

from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config
from align.reward_model import RewardModelConfig, eval_pairs, train_reward_model

report = runpy.run_path(str(Path(__file__).resolve().parents[1] / "eval" / "reward_model_report.py"))


def main() -> None:
    config = parse_config(RewardModelConfig)
    try:
        pairs = eval_pairs(config)  # read before training: a bad held-out file stops the run before any work
        final = train_reward_model(config)
        if not PartialState().is_main_process:
            return  # the main process evaluates
        if pairs is None:
            print(f"reward model: {final} (not evaluated: eval_data none)")
            return
        metrics = report["evaluate_reward_model"](
            final, pairs, Path(config.output_dir) / "eval", f"{config.target} RM"
        )
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error))
    print(report["format_table"]({config.target: metrics}))
    print(f"reward model: {final}")


if __name__ == "__main__":
    main()
