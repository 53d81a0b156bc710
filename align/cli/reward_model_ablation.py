"""Margin ablation (docs/method.md §5, paper Table 28): the same reward model trained with margin none / small /
large on the same data, evaluated on the same held-out pairs, printed as one table.

    align reward-model-ablation --config recipes/configs/reward_model/world_small_helpfulness.yaml
    python recipes/reward_model_ablation.py --config recipes/configs/reward_model/world_small_helpfulness.yaml

Takes every option of `align reward-model`; each scheme runs in `<output_dir>/margin-<scheme>/`.
"""

import dataclasses
from pathlib import Path

from accelerate import PartialState

from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config
from align.reports.reward_model import evaluate_reward_model, format_table
from align.reward_model import RewardModelConfig, eval_pairs, train_reward_model

SCHEMES = ("none", "small", "large")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    base = parse_config(RewardModelConfig, argv, prog, description=__doc__)
    rows = {}
    try:
        pairs = eval_pairs(base)
        if pairs is None:
            raise ValueError("eval_data: the ablation compares accuracies on held-out pairs; 'none' is not allowed")
        for scheme in SCHEMES:
            output_dir = Path(base.output_dir) / f"margin-{scheme}"
            config = dataclasses.replace(base, margin_scheme=scheme, output_dir=str(output_dir))
            final = train_reward_model(config)
            if not PartialState().is_main_process:
                continue  # the main process evaluates
            rows[f"{base.target}, margin {scheme}"] = evaluate_reward_model(
                final, pairs, output_dir / "eval", f"{base.target} RM, margin {scheme}"
            )
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    if rows:
        print(format_table(rows))


if __name__ == "__main__":
    main()
