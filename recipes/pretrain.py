"""Pretraining: `align pretrain` as a script, for `python recipes/pretrain.py` and `accelerate launch recipes/pretrain.py --config ...`.

What the stage does, every option and examples: `python recipes/pretrain.py --help` (the same text as
`align pretrain --help`; the code is `align/cli/pretrain.py`).
"""

from align.cli.pretrain import main

if __name__ == "__main__":
    main()
