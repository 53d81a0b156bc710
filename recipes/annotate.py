"""The annotation page: `align annotate` as a script, for `python recipes/annotate.py` and `accelerate launch recipes/annotate.py --config ...`.

What the stage does, every option and examples: `python recipes/annotate.py --help` (the same text as
`align annotate --help`; the code is `align/cli/annotate.py`).
"""

from align.cli.annotate import main

if __name__ == "__main__":
    main()
