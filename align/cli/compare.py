"""Compare alignment methods side by side: SFT, rejection sampling, RS + PPO (Llama 2), RS + DPO (Llama 3) and
iterative DPO, each for the same rounds on the same data, judged by gold (the demo world) or by held-out judges
(your data); docs/compare.md.

    align compare --round 3                                   # the demo world, every method (CPU: hours)
    align compare --round 1 --config world_tiny --name tiny   # a quick check of the command (minutes)
    align compare --round 2 --methods sft,rs,rs_dpo --sft_model runs/my_chat/final \\
        --helpfulness_rm ... --safety_rm ... --prompts prompts.jsonl --eval_prompts held_out.jsonl \\
        --helpfulness_eval_pairs ... --safety_eval_pairs ... --helpfulness_pairs data/round{round}_h.jsonl ...

Takes every option of `align round` (the same for all methods) and `--methods`; each method sets
rejection_sampling, ppo_from_round and dpo_from_round itself. Runs go to `<runs_dir>/<name>/<method>/` (each a
normal run of rounds with its own report.md, resumable); round 0 is made once and shared. Writes
`<runs_dir>/<name>/comparison.md`, `comparison.json` and `comparison.png`.
"""

import sys
from pathlib import Path

from align.compare import CompareConfig, run_methods, write_comparison
from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config
from align.reports.rounds import evaluate_round, write_report
from align.rounds import AnnotationNeeded


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(CompareConfig, argv, prog, description=__doc__)
    try:
        runs = run_methods(config, evaluate_round)
        from accelerate import PartialState

        if not PartialState().is_main_process:
            return
        for run_dir in runs.values():
            write_report(run_dir)
        written = write_comparison(config, runs)
    except AnnotationNeeded as waiting:
        print(f"{prog or Path(sys.argv[0]).name}: {waiting}", file=sys.stderr)
        raise SystemExit(3) from None
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    print(written.read_text())
    print(f"comparison: {written}")


if __name__ == "__main__":
    main()
