"""`accelerate launch` that exits with its recipe's status: `python -m align.launch [accelerate options] recipe.py`.

    python -m align.launch recipes/sft.py --config recipes/configs/sft/world_small.yaml
    python -m align.launch --multi_gpu --num_processes 8 recipes/rlhf_round.py --round 2 ...
    python -m align.launch --multi_gpu --num_processes 8 -m align round 2 ...       # the align command

The options are `accelerate launch`'s, unchanged (its config file too). The difference is what a failed recipe
leaves: `accelerate launch` turns every failure of the script into its own, exit status 1 with a traceback of
`CalledProcessError` (one process) or torch elastic's `ChildFailedError` (several), so a recipe's one-line
bad-input error (exit status 2) or its wait for annotations (3) arrives buried and with the wrong status. Here
the recipe's lines are all that is printed and its exit status is the launcher's.
"""

from __future__ import annotations

import logging
import subprocess
import sys

from accelerate.commands.launch import launch_command, launch_command_parser


def child_exit_status(error: BaseException) -> int | None:
    """The exit status of the failed recipe process behind an accelerate / torch elastic launch error."""
    if isinstance(error, subprocess.CalledProcessError):
        return error.returncode
    failures = getattr(error, "failures", None)  # torch.distributed.elastic's ChildFailedError
    if failures:
        statuses = [failure.exitcode for _, failure in sorted(failures.items())]
        return next((status for status in statuses if status > 0), statuses[0])
    return None


def main(argv: list[str] | None = None) -> int:
    """Launch the recipe; returns its exit status."""
    args = launch_command_parser().parse_args(sys.argv[1:] if argv is None else argv)
    # torch elastic logs an error report for a failed child; the recipe has already said what went wrong.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        launch_command(args)
    except KeyboardInterrupt:  # Ctrl-C reached every process: the recipe has said where its run stands
        return 130
    except Exception as error:  # noqa: BLE001  (only launch failures with a child's status are translated)
        status = child_exit_status(error)
        if status is None:
            raise
        return status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
