"""PPO: `align ppo` as a script, for `python recipes/ppo.py` and `accelerate launch recipes/ppo.py --config ...`.

What the stage does, every option and examples: `python recipes/ppo.py --help` (the same text as
`align ppo --help`; the code is `align/cli/ppo.py`).
"""

from align.cli.ppo import RecipeConfig, main  # noqa: F401  (RecipeConfig: the options, for tools)

if __name__ == "__main__":
    main()
