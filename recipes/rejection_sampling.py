"""Rejection sampling: `align rejection-sampling` as a script, for `python recipes/rejection_sampling.py` and `accelerate launch recipes/rejection_sampling.py --config ...`.

What the stage does, every option and examples: `python recipes/rejection_sampling.py --help` (the same text as
`align rejection-sampling --help`; the code is `align/cli/rejection_sampling.py`).
"""

from align.cli.rejection_sampling import RecipeConfig, main  # noqa: F401  (RecipeConfig: the options, for tools)

if __name__ == "__main__":
    main()
