"""Public benchmarks of a checkpoint through lm-evaluation-harness (the optional extra `align-rlhf[eval]`).

The Llama 2 paper evaluates each model on truthfulness and safety benchmarks beside its human and reward-model
judgements (TruthfulQA, ToxiGen, BOLD; Tables 11 and 14). `run_benchmarks` runs harness tasks on a checkpoint
through the harness's Python API (`lm_eval.simple_evaluate`, its `hf` model: transformers' Auto classes, which
load align's checkpoints and any other) and returns each task's metrics; `main_metric` picks the one a report
shows. The rounds run them on every round's policy (`--benchmarks truthfulqa_mc2,toxigen`) and the report gets
one column per task; `align evaluate` runs them on any checkpoint.

The paper's set, as the harness names it: `truthfulqa_mc2` (TruthfulQA, multiple choice), `toxigen` (ToxiGen,
classification accuracy). Those download their data from the Hub on first use; your own tasks are YAML files
in a folder given as `include_path` (the harness's task format; a `dataset_path: json` task reads local files,
which is how the tests run without a network).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

BENCHMARKS_HELP = (
    "comma-separated lm-evaluation-harness tasks run on each round's policy, one report column each (e.g. "
    "truthfulqa_mc2,toxigen; needs pip install 'align-rlhf[eval]'); your own task YAMLs: benchmark_include_path"
)
INCLUDE_HELP = "a folder of your own lm-evaluation-harness task YAML files (local data, no download)"
LIMIT_HELP = "at most this many examples per benchmark task (a quick look; the full task when unset)"


def parse_tasks(value: str | None) -> list[str]:
    """The task names of a comma-separated option (empty: none)."""
    return [task.strip() for task in (value or "").split(",") if task.strip()]


def _task_manager(include_path: str | None) -> Any:
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ValueError(
            "benchmarks: need lm-evaluation-harness, which is not installed: pip install 'align-rlhf[eval]'"
        ) from None
    if include_path and not os.path.isdir(include_path):
        raise FileNotFoundError(f"benchmark_include_path: no folder at {include_path}")
    return TaskManager(include_path=include_path) if include_path else TaskManager()


def check_tasks(tasks: list[str], include_path: str | None = None) -> None:
    """ValueError naming the first task the harness (and `include_path`) does not know, before any run."""
    manager = _task_manager(include_path)
    known = set(manager.all_tasks)
    for task in tasks:
        if task not in known:
            raise ValueError(
                f"benchmarks: no lm-evaluation-harness task {task!r}"
                + (f" (nor a YAML task of that name in {include_path})" if include_path else "")
            )


def run_benchmarks(
    model_dir: str | os.PathLike,
    tasks: list[str],
    include_path: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, dict[str, float]]:
    """Task -> {metric: value} of the checkpoint `model_dir` on lm-evaluation-harness `tasks` (the harness's own
    numbers, stderr and labels left out)."""
    import lm_eval
    import torch

    from .modeling import remote_code_allowed

    manager = _task_manager(include_path)
    check_tasks(tasks, include_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_args = f"pretrained={model_dir},dtype=float32,trust_remote_code={remote_code_allowed()}"
    output = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=tasks, task_manager=manager,
                                     device=device, batch_size=batch_size, limit=limit)  # fmt: skip
    return {
        task: {name: float(value) for name, value in numbers.items()
               if isinstance(value, (int, float)) and "stderr" not in name and name != "sample_len"}
        for task, numbers in output["results"].items()
        if task in tasks
    }  # fmt: skip


def main_metric(metrics: dict[str, float]) -> tuple[str, float]:
    """(name, value) of the metric a report shows for a task: the harness's first, e.g. `acc,none`."""
    name = next(iter(metrics))
    return name, metrics[name]


@dataclass
class EvaluateConfig:
    """`align evaluate`: lm-evaluation-harness tasks on one checkpoint."""

    model: str = field(metadata={"help": "a checkpoint folder (a stage's final/, any transformers causal LM)"})
    benchmarks: str = field(metadata={"help": "comma-separated lm-evaluation-harness tasks"})
    benchmark_include_path: str | None = field(default=None, metadata={"help": INCLUDE_HELP})
    benchmark_limit: int | None = field(default=None, metadata={"help": LIMIT_HELP})
    batch_size: int = field(default=8, metadata={"help": "examples per forward"})
    output: str | None = field(default=None, metadata={"help": "also write the metrics to this JSON file"})

    def __post_init__(self) -> None:
        from .config import check_field_types

        check_field_types(self)
        if not parse_tasks(self.benchmarks):
            raise ValueError("benchmarks: name at least one task")
        if self.benchmark_limit is not None and self.benchmark_limit <= 0:
            raise ValueError(f"benchmark_limit: must be positive, got {self.benchmark_limit}")
