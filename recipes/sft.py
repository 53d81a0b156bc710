"""Supervised fine-tuning: `align sft` as a script, for `python recipes/sft.py` and `accelerate launch recipes/sft.py --config ...`.

What the stage does, every option and examples: `python recipes/sft.py --help` (the same text as
`align sft --help`; the code is `align/cli/sft.py`).
"""

from align.cli.sft import RecipeConfig, main  # noqa: F401  (RecipeConfig: the options, for tools)

if __name__ == "__main__":
    main()
