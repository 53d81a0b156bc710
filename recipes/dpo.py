"""Direct preference optimisation: `align dpo` as a script, for `python recipes/dpo.py` and `accelerate launch recipes/dpo.py --config ...`.

What the stage does, every option and examples: `python recipes/dpo.py --help` (the same text as
`align dpo --help`; the code is `align/cli/dpo.py`).
"""

from align.cli.dpo import DPOConfig, main  # noqa: F401  (DPOConfig: the options, for tools)

if __name__ == "__main__":
    main()
