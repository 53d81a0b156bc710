"""Checkpoint I/O shared by every stage: atomic model directories, resumable Trainer checkpoints, markers.

- `save_pretrained_atomic(model, tokenizer, path)` writes into a temporary sibling folder and renames it into
  place, so `path` is either the old complete checkpoint or the new complete one, never half of each.
- transformers' Trainer writes `checkpoint-N/` file by file and `trainer_state.json` last;
  `last_complete_checkpoint(dir)` returns the newest one that has it, so a run killed while saving resumes
  from the previous complete checkpoint instead of failing on the partial one.
- `mark_done` / `is_done`: a stage's completion marker (a small JSON file written atomically).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io import atomic_write_text

TRAINER_STATE = "trainer_state.json"
DONE_MARKER = "DONE.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def write_directory_atomic(write: Callable[[Path], Any], path: str | os.PathLike) -> Path:
    """Run `write(folder)` on a temporary sibling folder, then rename it to `path`: readers see the old complete
    folder or the new complete one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        write(staging)
        if path.exists():
            retired = path.with_name(f".{path.name}.old-{int(time.time() * 1000)}")
            os.rename(path, retired)
            os.rename(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def save_pretrained_atomic(model: Any, tokenizer: Any, path: str | os.PathLike) -> Path:
    """Save `model` (and `tokenizer`, if given) with `save_pretrained` into `path`, atomically."""

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)

    return write_directory_atomic(write, path)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest `checkpoint-N` folder of a Trainer run that was completely written, or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    complete = [
        (int(match.group(1)), child)
        for child in output_dir.iterdir()
        if (match := _CHECKPOINT.match(child.name)) and (child / TRAINER_STATE).is_file()
    ]
    return max(complete)[1] if complete else None


# Settings a resumed run may change: how long it runs, how it reports and where it exports, not what it trains.
RUN_LENGTH_FIELDS = {
    "max_steps", "num_train_epochs", "num_iterations", "save_steps", "logging_steps", "report_to", "resume",
    "export_llama",
}  # fmt: skip
RUN_CONFIG = "run_config.json"


def prepare_run(output_dir: str | os.PathLike, config: Any, *, is_main: bool = True) -> Path | None:
    """Record the run's config in `output_dir` and return the checkpoint to resume from (None: start fresh).

    A folder that holds a run with a different config (other than its length or logging) is refused with a
    ValueError naming the first differing field, instead of silently continuing someone else's run.
    """
    output_dir = Path(output_dir)
    current = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    recorded_path = output_dir / RUN_CONFIG
    checkpoint = last_complete_checkpoint(output_dir) if current.get("resume", True) else None
    if checkpoint is not None and recorded_path.is_file():
        recorded = json.loads(recorded_path.read_text())
        for name in sorted(set(recorded) | set(current)):
            if name not in RUN_LENGTH_FIELDS and recorded.get(name) != current.get(name):
                raise ValueError(
                    f"output_dir {output_dir} holds a run with {name}={recorded.get(name)!r}, this config has "
                    f"{current.get(name)!r}; use another output_dir, or resume=false to start over"
                )
    if is_main:
        atomic_write_text(recorded_path, json.dumps(current, indent=2) + "\n")
    return checkpoint


def run_trainer(trainer: Any, config: Any, tokenizer: Any, finalize: Any = None, **facts: Any) -> Path:
    """Train (resuming when `prepare_run` finds a checkpoint), save `output_dir/final` atomically, mark done.

    `finalize(model) -> model` runs on the main process before saving (e.g. merging LoRA adapters); `facts`
    are recorded in the completion marker. Returns the final folder on every process.
    """
    output_dir = Path(config.output_dir)
    checkpoint = prepare_run(output_dir, config, is_main=trainer.is_world_process_zero())
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    final = output_dir / "final"
    if trainer.is_world_process_zero():
        model = finalize(trainer.model) if finalize else trainer.model
        save_pretrained_atomic(model, tokenizer, final)
        mark_done(
            output_dir,
            final=str(final),
            train_loss=result.training_loss,
            steps=result.global_step,
            processes=trainer.args.world_size,
            resumed_from=str(checkpoint) if checkpoint else None,
            **facts,
        )
    trainer.accelerator.wait_for_everyone()
    return final


EXPORT_LLAMA_HELP = "also write the final policy here as a plain transformers Llama directory (with its tokenizer)"


def export_llama(checkpoint: str | os.PathLike, save_directory: str | os.PathLike) -> Path:
    """Write the align checkpoint `checkpoint` as a plain `LlamaForCausalLM` directory with its tokenizer,
    atomically (the recipes' `--export_llama`)."""
    from .modeling import AlignLlamaForCausalLM, export_to_llama

    model = AlignLlamaForCausalLM.from_pretrained(require_model_dir(checkpoint))
    return write_directory_atomic(lambda staging: export_to_llama(model, staging), save_directory)


# Weight files that unpickle (run code) when loaded; align reads safetensors only.
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
SAFETENSORS_HOWTO = (
    "convert them once with `model = AutoModelForCausalLM.from_pretrained(dir); "
    "model.save_pretrained(new_dir)` (writes model.safetensors) in an environment you trust"
)


def pickle_weight_files(folder: Path) -> list[str]:
    """The pickle weight files in `folder` (not in subfolders)."""
    return sorted(path.name for pattern in PICKLE_WEIGHTS for path in folder.glob(pattern))


def require_model_dir(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """Check `path` is a saved model directory (config.json and safetensors weights inside); FileNotFoundError
    naming it otherwise, and ValueError for a folder whose only weights are pickle files (never loaded)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        reason = "does not exist" if not path.exists() else "has no config.json"
        raise FileNotFoundError(f"{what}: {path} {reason}; expected a directory written by save_pretrained")
    if not any(path.glob("*.safetensors")):
        pickled = pickle_weight_files(path)
        if pickled:
            raise ValueError(
                f"{what}: {path} holds pickle weights only ({', '.join(pickled)}), which align does not load; "
                f"{SAFETENSORS_HOWTO}"
            )
        raise FileNotFoundError(f"{what}: {path} has no weights (model.safetensors); expected a saved model")
    return path


def mark_done(stage_dir: str | os.PathLike, marker: str = DONE_MARKER, **info: Any) -> None:
    """Write the completion marker of a stage with whatever facts the caller records (metrics, paths)."""
    atomic_write_text(Path(stage_dir) / marker, json.dumps(info, indent=2, default=str) + "\n")


def is_done(stage_dir: str | os.PathLike, marker: str = DONE_MARKER) -> bool:
    return (Path(stage_dir) / marker).is_file()
