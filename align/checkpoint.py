"""Checkpoint I/O shared by every stage: atomic model directories, resumable Trainer checkpoints, markers.

- `save_pretrained_atomic(model, tokenizer, path)` writes into a temporary sibling folder and renames it into
  place, so `path` is either the old complete checkpoint or the new complete one, never half of each.
- transformers' Trainer writes `checkpoint-N/` file by file and `trainer_state.json` last (in place, not
  atomically); `last_complete_checkpoint(dir)` returns the newest one whose `trainer_state.json` is whole JSON,
  so a run killed while saving (even while writing that file) resumes from the previous complete checkpoint
  instead of failing on the partial one.
- `mark_done` / `is_done`: a stage's completion marker (a small JSON file written atomically).

A run owns its folder (`prepare_run`): the main process holds `<output_dir>/.align.lock` (host, pid, start) for
the run's life, so a second run on the same folder stops at once with one line; a lock left by a process that
is gone (same host) is taken over with a log line. A folder holding a run with another config is refused; a
finished run is not trained again (`finished_run`: its result is returned; `extend: true` continues it);
`resume: false` moves the previous run's checkpoints and result aside (`.previous-<time>/`) so they can never
be picked up; staging folders a killed save left behind are removed at start; checkpoints are rotated by step
number, never deleting the newest complete one (`rotate_checkpoints`).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cards import run_card
from .io import atomic_write_text, check_free_space, current_umask, naming_a_full_disk, read_text
from .sources import WORLD

TRAINER_STATE = "trainer_state.json"
DONE_MARKER = "DONE.json"
LOCK_FILE = ".align.lock"
WRITTEN_MARKER = ".align-written"  # in every folder `write_directory_atomic` writes: align may replace it later
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_STAGING = re.compile(r"^\..+\.(tmp|old)-")  # write_directory_atomic's temporary and retired folders
logger = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """An output folder that this run cannot use (in use, another run's, not a folder); names the folder."""


def write_directory_atomic(write: Callable[[Path], Any], path: str | os.PathLike) -> Path:
    """Run `write(folder)` on a temporary sibling folder, then rename it to `path`: readers see the old complete
    folder or the new complete one, never a mix.

    An existing `path` is replaced only when align wrote it (`require_replaceable`); anything else is refused
    with one line before the work starts, so that no command removes a folder it did not write."""
    path = Path(path)
    require_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        staging.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the result is an ordinary folder
        write(staging)
        (staging / WRITTEN_MARKER).write_text(
            json.dumps({"written_by": "align", "at": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n"
        )
        if path.exists():
            require_replaceable(path)  # it may have changed while this was written
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


def require_replaceable(path: Path) -> None:
    """RunFolderError unless `path` is absent, an empty folder, or a folder align wrote: one with its
    `WRITTEN_MARKER`, or a result (`final/`, `checkpoint-N/`) inside an align run folder."""
    if not path.exists():
        return
    if not path.is_dir():
        raise RunFolderError(f"output folder {path}: is a file, expected a folder")
    if not any(path.iterdir()) or (path / WRITTEN_MARKER).is_file() or is_run_folder(path.parent):
        return
    raise RunFolderError(
        f"output folder {path}: already holds files align did not write ({_some_names(path)}); give a new or "
        "empty folder (align never removes what it did not write)"
    )


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` is the output folder of an align run (its run record, lock or completion marker)."""
    return any((folder / name).is_file() for name in (RUN_CONFIG, LOCK_FILE, DONE_MARKER))


def _some_names(folder: Path, count: int = 3) -> str:
    names = sorted(child.name for child in folder.iterdir())
    return ", ".join(names[:count]) + (f" and {len(names) - count} more" if len(names) > count else "")


def require_own_output_dir(output_dir: Path) -> None:
    """RunFolderError when `output_dir` is a folder that holds files but is not an align run folder: a run
    rotates its checkpoints, replaces `final/` and moves its previous run aside there, so it starts only in a
    new, empty or earlier align run folder."""
    if output_dir.is_dir() and any(output_dir.iterdir()) and not is_run_folder(output_dir):
        raise RunFolderError(
            f"output_dir {output_dir}: already holds files align did not write ({_some_names(output_dir)}); give "
            "a new or empty folder (align never removes what it did not write)"
        )


def save_pretrained_atomic(model: Any, tokenizer: Any, path: str | os.PathLike) -> Path:
    """Save `model` (and `tokenizer`, if given) with `save_pretrained` into `path`, atomically."""

    from .data.tokenizer import keep_the_users_tokenizer_config

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
            keep_the_users_tokenizer_config(tokenizer, staging)

    return write_directory_atomic(write, path)


def is_complete_checkpoint(checkpoint: Path) -> bool:
    """Whether a `checkpoint-N` folder was completely written: its `trainer_state.json`, written last, is there
    and is whole JSON. Trainer writes that file in place, so a kill in the middle of it leaves an empty or cut
    file that must not count (resuming from it fails on the JSON)."""
    try:
        return isinstance(json.loads((checkpoint / TRAINER_STATE).read_bytes()), dict)
    except (OSError, ValueError):
        return False


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest `checkpoint-N` folder of a Trainer run that was completely written, or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    steps = sorted(
        ((int(match.group(1)), child) for child in output_dir.iterdir() if (match := _CHECKPOINT.match(child.name))),
        reverse=True,
    )
    return next((child for _, child in steps if is_complete_checkpoint(child)), None)


# Settings a resumed run may change: how long it runs, how it reports, where it exports and how its models are
# laid out over the processes (the RL stages' checkpoints are whole), not what it trains.
RUN_LENGTH_FIELDS = {
    "max_steps", "num_train_epochs", "num_iterations", "save_steps", "logging_steps", "report_to", "resume",
    "export_llama", "extend", "save_total_limit", "fsdp", "shard_frozen", "gradient_checkpointing", "decode",
    "generation_batch_size",
}  # fmt: skip
RUN_CONFIG = "run_config.json"
RESUME_HELP = (
    "resume from the last complete checkpoint if any; false: a fresh run (the previous one is moved aside to "
    ".previous-<time>/)"
)
EXTEND_HELP = "continue a finished run from its last checkpoint (e.g. with more steps)"
_HELD_LOCKS: dict[Path, Path] = {}  # output folder -> its lock file, held by this process
_TAKEN_FOLDERS: list[Path] = []  # output folders this process ran in, in order (for the Ctrl-C message)
# output folder -> the folders this process created for it, the deepest first (removed again if left empty)
_CREATED_FOLDERS: dict[Path, list[Path]] = {}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def acquire_run_lock(output_dir: str | os.PathLike) -> None:
    """Make this process the owner of `output_dir` (module docstring); RunFolderError if another live run is."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise RunFolderError(f"output_dir {output_dir}: is a file, expected a folder")
    if output_dir not in _HELD_LOCKS:
        require_own_output_dir(output_dir)
    if not output_dir.exists():  # with the parents it makes for it (`--output_dir runs/sft` with no runs/ yet)
        _CREATED_FOLDERS[output_dir] = [folder for folder in (output_dir, *output_dir.parents) if not folder.exists()]
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only disk, no permission, a file where a parent folder should be
        raise RunFolderError(f"output_dir {output_dir}: cannot create it ({error.strerror or error})") from None
    lock, host = output_dir / LOCK_FILE, socket.gethostname()
    me = {"host": host, "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    while True:
        # The lock appears with its content (written aside, then linked into place, which fails if a lock is
        # there): another run starting in the same instant never sees an empty lock it could take over.
        filled = output_dir / f".align.lock.{host}.{os.getpid()}"
        filled.write_text(json.dumps(me) + "\n")
        try:
            try:
                os.link(filled, lock)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: create it exclusively, then fill it
                with os.fdopen(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as file:
                    file.write(json.dumps(me) + "\n")
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                holder = {}  # damaged (a lock of an older align, created empty before it was filled)
            if holder.get("host") == host and holder.get("pid") == os.getpid():
                _HELD_LOCKS[output_dir] = lock  # this process already owns it (an earlier stage call)
                return
            if holder and (holder.get("host") != host or _process_alive(int(holder.get("pid", -1)))):
                raise RunFolderError(
                    f"output_dir {output_dir}: in use by another run (pid {holder.get('pid')} on "
                    f"{holder.get('host')} since {holder.get('since')}); wait for it to end or use another "
                    f"output_dir (if that run is gone, delete {lock})"
                ) from None
            logger.warning(
                "output_dir %s: taking over the lock of a run that is gone (%s)", output_dir, holder or "empty"
            )
            lock.unlink(missing_ok=True)
            continue
        finally:
            filled.unlink(missing_ok=True)
        if not _HELD_LOCKS:
            atexit.register(release_run_locks)
        _HELD_LOCKS[output_dir] = lock
        _TAKEN_FOLDERS.append(output_dir)
        return


def release_run_lock(output_dir: str | os.PathLike) -> None:
    """Give up `output_dir` if this process holds it; the folders it created for it (the output folder and any
    parent made for it) are removed while empty (a run stopped by bad input before any work), so that nothing is
    left behind."""
    output_dir = Path(output_dir)
    lock = _HELD_LOCKS.pop(output_dir, None)
    if lock is not None:
        try:
            if json.loads(lock.read_text()).get("pid") == os.getpid():
                lock.unlink()
        except (OSError, ValueError):
            pass
    for folder in _CREATED_FOLDERS.pop(output_dir, []):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


def releases_its_folder_on_error(stage: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a stage function or method so that when it fails (bad input found after the folder was taken,
    an error in training) its run gives up the `output_dir` of its first argument that has one (the config, or
    the trainer) at once (`release_run_lock`), not at the end of the process: a notebook or a pipeline that
    goes on can run there again."""

    @functools.wraps(stage)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return stage(*args, **kwargs)
        except BaseException:
            owner = next((a for a in args if hasattr(a, "output_dir")), None)
            if owner is not None:
                release_run_lock(owner.output_dir)
            raise

    return run


def interrupted_message() -> str:
    """What a command says when the user interrupts it (Ctrl-C): where each run it held stands, and how to go on."""
    if not _TAKEN_FOLDERS:
        return "interrupted"
    output_dir = _TAKEN_FOLDERS[-1]  # the run in progress (the rounds take one folder per stage)
    checkpoint = last_complete_checkpoint(output_dir)
    where = f"its last complete checkpoint is {checkpoint}" if checkpoint else "no checkpoint of it was complete yet"
    return f"interrupted during the run in {output_dir} ({where}); run the same command again to resume"


def release_run_locks() -> None:
    for output_dir in list(_HELD_LOCKS):
        release_run_lock(output_dir)


def remove_stale_staging(output_dir: Path) -> None:
    """Delete the temporary folders of saves that were killed (`.checkpoint-N.tmp-*`, `.final.old-*`)."""
    for child in output_dir.iterdir() if output_dir.is_dir() else ():
        if child.is_dir() and _STAGING.match(child.name):
            shutil.rmtree(child, ignore_errors=True)


def _recorded_config(path: Path) -> dict[str, Any]:
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        raise RunFolderError(
            f"output_dir {path.parent}: {path} is unreadable (not the JSON record of a run); move the folder "
            "aside or delete it"
        )
    return recorded


def recorded_config(config: Any) -> dict[str, Any]:
    """`config` as align records it (run_config.json, the rounds' manifest): JSON values, and no `world_*`
    settings in a run that uses no part of the demo world (no field is 'world'), where they mean nothing."""
    return without_unused_world_fields(json.loads(json.dumps(dataclasses.asdict(config), default=str)))


def without_unused_world_fields(record: dict[str, Any]) -> dict[str, Any]:
    if any(value == WORLD for value in record.values()):
        return record
    return {name: value for name, value in record.items() if not name.startswith("world_")}


def field_defaults(config: Any) -> dict[str, Any]:
    """The default of each field of the dataclass `config` (JSON values, as `recorded_config` writes them)."""
    defaults = {}
    for field in dataclasses.fields(config):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return json.loads(json.dumps(defaults, default=str))


def check_same_run(
    output_dir: Path, current: dict[str, Any], what: str, defaults: dict[str, Any] | None = None
) -> None:
    """RunFolderError naming the first field (other than the run's length or logging) in which the run recorded
    in `output_dir` differs from `current`; nothing when no run config is recorded there. A field the record
    lacks (a run of an earlier version, before the field existed) counts as its value in `defaults`, the
    behaviour that version had, so such a run resumes unless the new field is set to something else."""
    recorded_path = output_dir / RUN_CONFIG
    if not recorded_path.is_file():
        return
    recorded = without_unused_world_fields(_recorded_config(recorded_path))  # as recorded before they were left out
    for name in sorted(set(recorded) | set(current)):
        if name not in recorded and defaults is not None and name in defaults and current.get(name) == defaults[name]:
            continue
        if name not in RUN_LENGTH_FIELDS and recorded.get(name) != current.get(name):
            raise RunFolderError(
                f"output_dir {output_dir} holds {what} with {name}={recorded.get(name)!r}, this config has "
                f"{current.get(name)!r}; use another output_dir, or resume=false to start over (the old run is moved "
                "aside, not deleted)"
            )


def prior_work(output_dir: Path) -> list[Path]:
    """What a previous run left in `output_dir`: checkpoints, its result, its completion marker."""
    names = [child for child in output_dir.iterdir() if _CHECKPOINT.match(child.name)] if output_dir.is_dir() else []
    results = ("final", DONE_MARKER, "kept.jsonl", "shards", "adapter", "best", "metrics.jsonl")
    return sorted(names) + [output_dir / name for name in results if (output_dir / name).exists()]


def resumable_checkpoint(output_dir: str | os.PathLike, config: Any, extra_work: bool = False) -> Path | None:
    """The checkpoint a run of `config` in `output_dir` resumes from (None: it starts fresh), reading only.

    RunFolderError when the folder's run record is unreadable, or when the folder holds work (checkpoints, a
    result, or `extra_work`: the stage's own resumable output, e.g. rejection sampling's shards) of a run with
    a different config (other than its length or logging), naming the first differing field, instead of
    silently continuing someone else's run."""
    output_dir = Path(output_dir)
    if (output_dir / RUN_CONFIG).is_file():
        _recorded_config(output_dir / RUN_CONFIG)  # a damaged record is never silently replaced
    if not getattr(config, "resume", True):
        return None
    if prior_work(output_dir) or extra_work:
        check_same_run(output_dir, recorded_config(config), "a run", field_defaults(config))
    return last_complete_checkpoint(output_dir)


def prepare_run(
    output_dir: str | os.PathLike,
    config: Any,
    *,
    is_main: bool = True,
    extra_work: bool = False,
    needed_bytes: int | None = None,
) -> Path | None:
    """Take the folder for this run (module docstring) and return the checkpoint to resume from (None: start
    fresh; `resumable_checkpoint`). Everything is checked before the first write: the lock, the run record,
    the config against the folder's run, and `needed_bytes` of free disk (a checkpoint's size); then stale
    staging folders are removed, `resume: false` moves the previous run aside and the run's config is
    recorded."""
    output_dir = Path(output_dir)
    if is_main:
        acquire_run_lock(output_dir)
    checkpoint = resumable_checkpoint(output_dir, config, extra_work)
    if not is_main:
        return checkpoint
    if needed_bytes:
        check_free_space(output_dir, needed_bytes, "a checkpoint (weights and optimizer state)")
    remove_stale_staging(output_dir)
    recorded_path = output_dir / RUN_CONFIG
    previous = prior_work(output_dir)
    if not getattr(config, "resume", True) and previous:  # a fresh run: the old checkpoints are never resumed
        aside = output_dir / f".previous-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside.mkdir()
        for path in previous + ([recorded_path] if recorded_path.is_file() else []):
            os.rename(path, aside / path.name)
        logger.warning("resume=false: moved the previous run in %s aside to %s", output_dir, aside)
    atomic_write_text(recorded_path, json.dumps(recorded_config(config), indent=2) + "\n")
    if checkpoint is not None:
        print(f"{output_dir}: resuming from {checkpoint} (the last complete checkpoint)", flush=True)
    return checkpoint


def finished_run(output_dir: str | os.PathLike, config: Any, result: str = "final") -> Path | None:
    """The result of a finished run of this config in `output_dir` (its completion marker is there), or None,
    and then the main process owns the folder (`acquire_run_lock`), so that a second run stops here, before
    reading any data.

    A finished run is not trained again: the stages return this result after saying where it is, unless the
    config asks to `extend` it (continue from its last checkpoint, e.g. with more steps) or not to `resume`.
    A finished run with another config is refused like an unfinished one (RunFolderError)."""
    output_dir = Path(output_dir)
    if not is_done(output_dir) or getattr(config, "extend", False) or not getattr(config, "resume", True):
        if int(os.environ.get("RANK", "0")) == 0:
            acquire_run_lock(output_dir)
            if (output_dir / RUN_CONFIG).is_file():
                _recorded_config(output_dir / RUN_CONFIG)
        return None
    check_same_run(output_dir, recorded_config(config), "a finished run", field_defaults(config))
    path = output_dir / result
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"{output_dir}: finished already (DONE.json); its result is {path} (extend: true continues it)", flush=True
        )
    return path


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> None:
    """Keep the `keep` newest complete checkpoints by step number (never the newest complete one's removal);
    incomplete ones older than the newest complete checkpoint are debris of killed saves and go too."""
    output_dir = Path(output_dir)
    checkpoints = sorted(
        (int(match.group(1)), child)
        for child in output_dir.iterdir()
        if (match := _CHECKPOINT.match(child.name)) and child.is_dir()
    )
    complete = [path for _, path in checkpoints if is_complete_checkpoint(path)]
    if not complete:
        return
    newest = int(complete[-1].name.split("-")[1])
    doomed = complete[: -max(keep or 0, 1)] if keep else []
    doomed += [path for step, path in checkpoints if step < newest and path not in complete]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)


def checkpoint_bytes(model: Any) -> int:
    """About what one checkpoint of `model` takes on disk: its weights plus AdamW's two fp32 moments of the
    trainable ones (the optimizer state Trainer and PPO save beside them)."""
    parameters = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in parameters)
    return weights + sum(p.numel() * 8 for p in parameters if p.requires_grad)


class NonFiniteTrainingError(ValueError):
    """Training made the loss or the weights NaN or inf; the run stopped before saving anything of that step."""

    def __init__(self, step: int, what: str, unit: str = "step") -> None:
        super().__init__(
            f"training stopped at {unit} {step}: {what} became NaN or inf (no checkpoint of it is saved and final/ "
            "is not written); lower lr, check the data, or resume from the last checkpoint with other settings"
        )


def require_finite_training(model: Any, step: int, loss: float | None = None, unit: str = "step") -> None:
    """NonFiniteTrainingError naming `step` when `loss` or any trained weight of `model` is NaN or inf, decided
    the same on every process (a shard's verdict is shared), so that all of them stop together. Called after
    each optimizer step, before any checkpoint of it is written: a resume then starts from finite weights."""
    import torch

    trained = [p.detach() for p in model.parameters() if p.requires_grad]
    local = [p.to_local() if hasattr(p, "to_local") else p for p in trained]  # FSDP2 shards (DTensor)
    verdict = torch.tensor([float(not all(bool(torch.isfinite(p).all()) for p in local)),
                            float(loss is not None and not math.isfinite(loss))])  # fmt: skip
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        verdict = verdict.to(local[0].device if local else "cpu")
        torch.distributed.all_reduce(verdict, op=torch.distributed.ReduceOp.MAX)
    bad_weights, bad_loss = (bool(v) for v in verdict.tolist())
    if bad_loss:
        raise NonFiniteTrainingError(step, f"the loss ({loss})", unit)
    if bad_weights:
        raise NonFiniteTrainingError(step, "the weights", unit)


def stop_on_non_finite() -> Any:
    """A Trainer callback that stops the run (`NonFiniteTrainingError`) when a step leaves the trained weights,
    or a logged loss, NaN or inf: Trainer calls it after each optimizer step and each log, before that step's
    checkpoint is saved."""
    from transformers import TrainerCallback

    class StopOnNonFinite(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if model is not None:
                require_finite_training(model, state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):  # the mean over processes: the same on all
                raise NonFiniteTrainingError(state.global_step, f"the loss ({loss})")

    return StopOnNonFinite()


def run_trainer(trainer: Any, config: Any, tokenizer: Any, finalize: Any = None, **facts: Any) -> Path:
    """Train (resuming when `prepare_run` finds a checkpoint), save `output_dir/final` atomically, mark done.

    `finalize(model) -> model` runs on the main process before saving (e.g. merging LoRA adapters); `facts`
    are recorded in the completion marker. Returns the final folder on every process.
    """
    from transformers import TrainerCallback

    from .tracking import METRICS_FILE, resume_points, whole_run_mean

    class RotateByStep(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                rotate_checkpoints(output_dir, config.save_total_limit)

    output_dir = Path(config.output_dir)
    needed, what = checkpoint_bytes(trainer.model), "a checkpoint (weights and optimizer state)"
    checkpoint = prepare_run(output_dir, config, is_main=trainer.is_world_process_zero(), needed_bytes=needed)
    trainer.add_callback(RotateByStep())
    trainer.add_callback(stop_on_non_finite())
    # TRL's card links a local base model as "[None](https://huggingface.co/None)" and is written at every
    # checkpoint; align writes the run's card once, from final/ and DONE.json (align.cards).
    trainer.create_model_card = lambda *args, **kwargs: None
    with naming_a_full_disk(output_dir, needed, what):
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    final = output_dir / "final"
    if trainer.is_world_process_zero():
        model = finalize(trainer.model) if finalize else trainer.model
        with naming_a_full_disk(output_dir, needed, what):
            save_pretrained_atomic(model, tokenizer, final)
        resumes = resume_points(output_dir / METRICS_FILE)
        # After a resume, Trainer's training_loss covers the resumed part only; the logged losses cover it all.
        whole = whole_run_mean(output_dir / METRICS_FILE) if resumes else None
        mark_done(
            output_dir,
            final=str(final),
            train_loss=whole if whole is not None else result.training_loss,
            **({"train_loss_last_attempt": result.training_loss} if resumes else {}),
            steps=result.global_step,
            processes=trainer.args.world_size,
            resumed_from=str(checkpoint) if checkpoint else None,
            resume_points=resumes,
            **facts,
        )
        stage = getattr(type(config), "shipped_configs", None)
        atomic_write_text(output_dir / "README.md", run_card(output_dir, stage, getattr(config, "model", None)))
        release_run_lock(output_dir)
    trainer.accelerator.wait_for_everyone()
    return final


EXPORT_LLAMA_HELP = "also write the final policy here as a plain transformers Llama directory (with its tokenizer)"


def export_llama(checkpoint: str | os.PathLike, save_directory: str | os.PathLike) -> Path:
    """Write the align checkpoint `checkpoint` as a plain `LlamaForCausalLM` directory with its tokenizer,
    atomically (the recipes' `--export_llama`). A checkpoint in another transformers architecture (Qwen2,
    Mistral, ...) is refused with one line: it is already what transformers loads."""
    from .modeling import export_to_llama, load_causal_lm

    source, target = Path(checkpoint).resolve(), Path(save_directory).resolve()
    if target == source or target in source.parents:
        raise RunFolderError(
            f"export to {save_directory}: that folder holds the checkpoint being exported ({checkpoint}); give "
            "another folder (align never writes onto its input)"
        )
    require_replaceable(Path(save_directory))  # before loading the model: a refused folder costs nothing
    model = load_causal_lm(require_model_dir(checkpoint), "export", as_align_llama=True)
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


def read_model_config(path: Path, what: str) -> dict[str, Any]:
    """The `config.json` of the model folder `path`, as a dict; ValueError naming it when it is not JSON."""
    try:
        config = json.loads(read_text(path / "config.json"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{what}: {path / 'config.json'} is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{what}: {path / 'config.json'}: expected a JSON object")
    return config


def weight_files(path: Path, what: str) -> list[Path]:
    """The safetensors files of the model folder `path`: the shards its index names, else every *.safetensors."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(read_text(index))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{what}: {index} is not a safetensors index (no weight_map)") from None
        missing = [name for name in shards if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{what}: {path} lacks {missing[0]}, a weight shard its index names")
        return [path / name for name in shards]
    return sorted(path.glob("*.safetensors"))


def tensor_names(weights: Path, what: str) -> list[str]:
    """The tensor names in a safetensors file, read from its header (cheap); ValueError naming the file when it
    is empty, truncated or not safetensors (a save that was killed or a download that broke off)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as file:
            return list(file.keys())
    except (SafetensorError, OSError) as error:
        size = weights.stat().st_size
        raise ValueError(
            f"{what}: {weights} is not a readable safetensors file ({size} bytes: {error}); it is damaged or was "
            "cut short (a killed save, a broken download): write or download it again"
        ) from None


def require_model_dir(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """Check `path` is a saved model directory before anything loads it: a `config.json` that is JSON and
    safetensors weights whose headers read (every shard an index names). FileNotFoundError naming it when
    something is missing, ValueError for a damaged file or for pickle weights (never loaded)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        reason = "does not exist" if not path.exists() else "has no config.json"
        raise FileNotFoundError(f"{what}: {path} {reason}; expected a directory written by save_pretrained")
    read_model_config(path, what)
    from .modeling import load_model_config

    load_model_config(path, what)  # an architecture transformers knows (or would need the folder's code: refused)
    weights = weight_files(path, what)
    if not weights:
        pickled = pickle_weight_files(path)
        if pickled:
            raise ValueError(
                f"{what}: {path} holds pickle weights only ({', '.join(pickled)}), which align does not load; "
                f"{SAFETENSORS_HOWTO}"
            )
        raise FileNotFoundError(f"{what}: {path} has no weights (model.safetensors); expected a saved model")
    for file in weights:
        tensor_names(file, what)
    return path


def require_reward_model_dir(path: str | os.PathLike, what: str = "reward model") -> Path:
    """`require_model_dir` for a reward model: its config names a sequence-classification architecture and its
    weights hold the trained score head (a causal LM given here would get a random, untrained one); ValueError
    naming it otherwise."""
    path = require_model_dir(path, what)
    architectures = read_model_config(path, what).get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ValueError(
            f"{what}: {path} is not a reward model (architectures {architectures}); expected one trained by "
            "align reward-model (a ForSequenceClassification checkpoint)"
        )
    names = [name for file in weight_files(path, what) for name in tensor_names(file, what)]
    if not any(name.split(".")[-2:] == ["score", "weight"] for name in names):
        raise ValueError(f"{what}: {path} has no trained score head (no score.weight in its weights)")
    return path


def check_vocabulary(tokenizer: Any, model_dir: str | os.PathLike, what: str) -> None:
    """ValueError naming `what` when the tokenizer has ids the model's embeddings do not hold (the model would
    fail on the first such token with an IndexError); a model larger than its tokenizer is fine (padding)."""
    vocab_size = read_model_config(Path(model_dir), what).get("vocab_size")
    if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:
        raise ValueError(
            f"{what}: {model_dir}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
            f"(vocab_size) holds {vocab_size}; use the model's own tokenizer, or resize its embeddings "
            "(model.resize_token_embeddings(len(tokenizer))) and save it"
        )


def check_same_tokenizer(tokenizer: Any, model_dir: str | os.PathLike, what: str) -> None:
    """ValueError naming `what` when the tokenizer saved with `model_dir` has another vocabulary than
    `tokenizer`: a model started from it (PPO's value model, from the helpfulness reward model) would read the
    policy's token ids as other tokens. A folder without a tokenizer is left to `check_vocabulary`."""
    from transformers import AutoTokenizer

    from .modeling import remote_code_allowed

    try:
        other = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote_code_allowed())
    except (OSError, ValueError, TypeError):
        return
    if other.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"{what}: {model_dir} has another tokenizer than the policy ({len(other)} vs {len(tokenizer)} tokens), "
            "so a value model cannot start from it; give value_model a model on the policy's tokenizer, or "
            "shared_value_head: true"
        )


def mark_done(stage_dir: str | os.PathLike, marker: str = DONE_MARKER, **info: Any) -> None:
    """Write the completion marker of a stage with whatever facts the caller records (metrics, paths)."""
    atomic_write_text(Path(stage_dir) / marker, json.dumps(info, indent=2, default=str) + "\n")


def is_done(stage_dir: str | os.PathLike, marker: str = DONE_MARKER) -> bool:
    return (Path(stage_dir) / marker).is_file()
