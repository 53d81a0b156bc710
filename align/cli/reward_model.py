"""Train a helpfulness or safety reward model with the margin ranking loss (docs/method.md §5;
docs/stages/reward-model.md) and report its accuracy by preference strength.

    align reward-model --config recipes/configs/reward_model/world_small_helpfulness.yaml
    align reward-model --config recipes/configs/reward_model/world_small_safety.yaml
    accelerate launch -m align reward-model --config recipes/configs/reward_model/7b.yaml --target safety
    python recipes/reward_model.py --config recipes/configs/reward_model/world_small_safety.yaml   # as a script

Writes `<output_dir>/final` (the reward model) and `<output_dir>/eval/` (metrics.json, predictions.jsonl,
accuracy_by_strength.png) on the held-out pairs `eval_data` (required with your own data; 'none' skips it;
the world's test pairs when the training data is the world's).
"""

from pathlib import Path

from accelerate import PartialState

from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config
from align.reports.reward_model import evaluate_reward_model, format_table
from align.reward_model import RewardModelConfig, eval_pairs, train_reward_model


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(RewardModelConfig, argv, prog, description=__doc__)
    try:
        pairs = eval_pairs(config)  # read before training: a bad held-out file stops the run before any work
        final = train_reward_model(config)
        if not PartialState().is_main_process:
            return  # the main process evaluates
        if pairs is None:
            print(f"reward model: {final} (not evaluated: eval_data none)")
            return
        metrics = evaluate_reward_model(final, pairs, Path(config.output_dir) / "eval", f"{config.target} RM")
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    print(format_table({config.target: metrics}))
    print(f"reward model: {final}")


if __name__ == "__main__":
    main()
