"""Run lm-evaluation-harness tasks on a checkpoint (docs/reports.md, "Public benchmarks"; needs
`pip install 'align-rlhf[eval]'`).

    align evaluate --model runs/demo/round-3/ppo/final --benchmarks truthfulqa_mc2,toxigen
    align evaluate --model runs/mine/round-1/rejection_sampling/final --benchmarks my_task \\
        --benchmark_include_path my_tasks/ --output bench.json

Prints each task's metrics (the harness's own numbers) and, with `--output`, writes them as JSON. The rounds run
the same on every round's policy with `--benchmarks` and put each task's main metric in the report.
"""

import json
from pathlib import Path

from ..benchmarks import EvaluateConfig, parse_tasks, run_benchmarks
from ..checkpoint import require_model_dir
from ..config import ONE_LINE_ERRORS, exit_with_error, parse_config
from ..io import atomic_write_text


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(EvaluateConfig, argv, prog, description=__doc__)
    try:
        require_model_dir(config.model, "model")
        results = run_benchmarks(config.model, parse_tasks(config.benchmarks), config.benchmark_include_path,
                                 config.benchmark_limit, config.batch_size)  # fmt: skip
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    for task, metrics in results.items():
        print(f"{task}: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    if config.output:
        atomic_write_text(
            Path(config.output), json.dumps({"model": config.model, "results": results}, indent=2) + "\n"
        )
        print(f"metrics: {config.output}")


if __name__ == "__main__":
    main()
