"""`align`: one command for every stage and tool of the pipeline (the console script of `pip install align-rlhf`).

    align <command> [options]          # e.g. align sft --config recipes/configs/sft/world_small.yaml
    align <command> --help             # the stage, every option with its default, examples
    accelerate launch [launch options] -m align <command> [options]     # several processes / GPUs

Each command takes the same YAML config and options as its script under `recipes/` (one parser: the recipes
call these same entry points), prints one error line and exits with status 2 on bad input.
"""

from __future__ import annotations

import difflib
import importlib
import sys

# name -> (module whose main(argv, prog) runs it, one line for `align --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("align.cli.pretrain", "pretrain a Llama 2 model on raw text"),
    "sft": ("align.cli.sft", "supervised fine-tuning on a chat format (loss on answers only, optional GAtt)"),
    "reward-model": ("align.cli.reward_model", "train a helpfulness or safety reward model (margin ranking loss)"),
    "reward-model-ablation": ("align.cli.reward_model_ablation", "the reward model with margin none/small/large"),
    "rejection-sampling": ("align.cli.rejection_sampling", "best-of-K sampling, then fine-tuning on the best"),
    "ppo": ("align.cli.ppo", "PPO on the safety-gated reward with a KL penalty"),
    "dpo": ("align.cli.dpo", "direct preference optimisation on preference pairs (TRL's DPOTrainer)"),
    "compare": ("align.cli.compare", "methods side by side (RS, RS+PPO, RS+DPO, DPO) on the same data and judges"),
    "round": ("align.cli.round", "iterative RLHF rounds: `align round N` runs rounds 1..N (the demo by default)"),
    "plan": ("align.plan", "memory per GPU of a stage's layout before a run; refuses what cannot fit"),
    "export": ("align.cli.export", "write a checkpoint as a plain transformers Llama directory"),
    "annotate": ("align.cli.annotate", "label a round's comparisons in the browser"),
    "report": ("align.cli.report", "rebuild a run's report.md / report.html from its evaluations"),
    "evaluate": ("align.cli.evaluate", "lm-evaluation-harness benchmarks on a checkpoint (align-rlhf[eval])"),
    "bench": ("align.cli.bench", "run a benchmark of eval/bench/ (source checkout)"),
}


def usage() -> str:
    """`align --help`: the docstring and the table of commands."""
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:{width}s}  {line}" for name, (_, line) in COMMANDS.items())
    return f"{__doc__}\ncommands:\n{rows}\n\nDocs: docs/index.md (or the built site); the method: docs/method.md."


def main(argv: list[str] | None = None) -> None:
    """Dispatch `align <command> ...` to the command's `main(argv, prog)`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    if argv[0] == "--version":
        from align import __version__

        print(f"align {__version__}")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        from align.config import exit_with_error  # not at the top: `align --help` stays quick

        exit_with_error(f"unknown command {name!r}{hint}; expected one of {', '.join(COMMANDS)}", prog="align")
    module = importlib.import_module(COMMANDS[name][0])
    module.main(rest, prog=f"align {name}")


if __name__ == "__main__":
    main()
