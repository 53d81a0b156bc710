"""`python -m align <command>` and `accelerate launch -m align <command>`: the `align` console script."""

from align.cli import main

main()
