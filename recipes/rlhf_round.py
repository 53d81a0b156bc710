"""Iterative RLHF rounds: `align round` as a script, for `python recipes/rlhf_round.py` and `accelerate launch recipes/rlhf_round.py --round 3`.

What the stage does, every option and examples: `python recipes/rlhf_round.py --help` (the same text as
`align round --help`; the code is `align/cli/round.py`).
"""

from align.cli.round import RecipeConfig, main  # noqa: F401  (RecipeConfig: the options, for tools)

if __name__ == "__main__":
    main()
