"""Metrics of every run as JSON lines (`<output_dir>/metrics.jsonl`), which `eval/` reads and plots.

`JsonlMetricsCallback` plugs into transformers' Trainer (and so into TRL's trainers); `MetricsWriter` is the
same file for the explicit loops of the on-policy stages. Only the main process writes. Lines are appended
and flushed one at a time, so a killed run keeps every line it logged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .io import atomic_write_text, read_jsonl

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Append `{"step": ..., "time": ..., **metrics}` lines to `path`; with `tensorboard_dir`, also write every
    number as a TensorBoard scalar there (needs the `tensorboard` package)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, tensorboard_dir: str | None = None) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.tensorboard = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard_dir:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(tensorboard_dir)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        with self.path.open("a") as file:
            file.write(json.dumps(record, default=float) + "\n")
            file.flush()
        if self.tensorboard is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(name, value, step)
            self.tensorboard.flush()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics file (an empty list if it does not exist)."""
    return read_jsonl(path) if Path(path).exists() else []


def mark_resume(path: str | os.PathLike, step: int) -> None:
    """A run (re)starts at `step`: drop the records a killed attempt logged after that step (they are logged
    again), and, when it resumes from a checkpoint (`step` > 0), append `{"step": step, "resumed_from_step":
    step}`, so the file has each step once and lists the resume points. A start from step 0 (a first attempt
    killed before its first checkpoint was complete) begins the file afresh."""
    path = Path(path)
    if step == 0 and not path.exists():
        return
    kept = [record for record in read_metrics(path) if record.get("step", 0) <= step and step > 0]
    if step > 0:
        kept.append({"step": step, "time": round(time.time(), 3), "resumed_from_step": step})
    atomic_write_text(path, "".join(json.dumps(record, default=float) + "\n" for record in kept))


def resume_points(path: str | os.PathLike) -> list[int]:
    """The steps a run resumed from, as `mark_resume` recorded them."""
    return [record["resumed_from_step"] for record in read_metrics(path) if "resumed_from_step" in record]


def whole_run_mean(path: str | os.PathLike, key: str = "loss") -> float | None:
    """The step-weighted mean of a logged metric over the whole run (each logged value is the mean since the
    previous log), across resumes; None when it was never logged."""
    total, steps, previous = 0.0, 0, 0
    for record in read_metrics(path):
        if "resumed_from_step" in record:
            previous = record["step"]
        elif key in record and isinstance(record[key], (int, float)):
            span = max(record["step"] - previous, 1)
            total, steps, previous = total + record[key] * span, steps + span, record["step"]
    return total / steps if steps else None


class JsonlMetricsCallback(TrainerCallback):
    """Write every Trainer log (loss, learning_rate, grad_norm, eval metrics) to `<output_dir>/metrics.jsonl`;
    a resumed run first marks the resume (`mark_resume`)."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.writer: MetricsWriter | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:  # global_step: the state of the checkpoint resumed from, or 0
            mark_resume(self.output_dir / METRICS_FILE, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.writer is None:
            self.writer = MetricsWriter(self.output_dir / METRICS_FILE, enabled=state.is_world_process_zero)
        if logs:
            self.writer.write(state.global_step, dict(logs))
