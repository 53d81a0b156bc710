"""Reward-model training: `align reward-model` as a script, for `python recipes/reward_model.py` and `accelerate launch recipes/reward_model.py --config ...`.

What the stage does, every option and examples: `python recipes/reward_model.py --help` (the same text as
`align reward-model --help`; the code is `align/cli/reward_model.py`).
"""

from align.cli.reward_model import main

if __name__ == "__main__":
    main()
