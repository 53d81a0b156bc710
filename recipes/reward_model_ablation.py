"""The reward model's margin ablation: `align reward-model-ablation` as a script, for `python recipes/reward_model_ablation.py` and `accelerate launch recipes/reward_model_ablation.py --config ...`.

What the stage does, every option and examples: `python recipes/reward_model_ablation.py --help` (the same text as
`align reward-model-ablation --help`; the code is `align/cli/reward_model_ablation.py`).
"""

from align.cli.reward_model_ablation import main

if __name__ == "__main__":
    main()
