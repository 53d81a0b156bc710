"""Recipe configuration: one dataclass per stage, read from YAML with any field overridable on the command line.

    config = parse_config(PretrainConfig)            # argv: --config recipes/configs/pretrain/world.yaml --lr 1e-4

Config fields carry `help` metadata (TRL style), so `--help` documents every option. Mistakes never end in a
traceback: an unknown YAML key or command-line option, a value of the wrong type, or a value the config's own
validation refuses prints one line naming the key (with a close match when there is one) and exits with 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import logging
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
import yaml
from transformers import HfArgumentParser

from .checkpoint import EXTEND_HELP, RESUME_HELP, release_run_locks
from .io import DiskFullError, load_yaml, read_text, shipped_config, shipped_config_names, shipped_path
from .reward_sources import RewardSourceError

ConfigT = TypeVar("ConfigT")
logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration mistake; the message names the key or file."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the command's docstring layout and show an option's default once, where it says something: not when
    the help already names it ("(default: the model's)"), not for a required option, nor for an empty one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or action.default in (None, "", argparse.SUPPRESS):
            return text
        if isinstance(action, argparse._StoreFalseAction):  # a --no_X switch: its default is X's
            return text
        return super()._get_help_string(action)


class _OneLineParser(HfArgumentParser):
    """argparse prints usage plus a message on errors; recipes print the message alone."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


# Option names users bring from TRL / transformers scripts, and align's name for the same setting.
FAMILIAR_NAMES = {"learning_rate": "lr", "num_epochs": "num_train_epochs", "epochs": "num_train_epochs",
                  "batch_size": "per_device_batch_size", "per_device_train_batch_size": "per_device_batch_size",
                  "model_name_or_path": "model", "dataset_name": "dataset", "max_seq_length": "max_length"}  # fmt: skip


def _suggest(name: str, known: list[str]) -> str:
    dashes = "--" if name.startswith("--") else ""
    familiar = FAMILIAR_NAMES.get(name.lstrip("-"))
    if familiar and dashes + familiar in known:
        return f" (did you mean {dashes + familiar!r}?)"
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_yaml_config(path: str | Path, config_class: type) -> dict[str, Any]:
    """The YAML mapping of `path`, every key checked against the fields of `config_class`. `path` may also be
    align's shipped `recipes/configs/...` (from any folder) or a shipped config's name for this stage
    (`--config world_small`; the stage folder is `config_class.shipped_configs`)."""
    stage = getattr(config_class, "shipped_configs", None)
    by_name = shipped_config(str(path), stage) if stage and not Path(path).exists() else None
    path = by_name or shipped_path(path)
    if not path.is_file():
        names = f" (nor a config align ships by that name: {', '.join(shipped_config_names(stage))})" if stage else ""
        raise ConfigError(f"--config: no file at {path}{names}")
    try:
        values = load_yaml(read_text(path)) or {}
    except ValueError as error:  # not UTF-8: named by file and line
        raise ConfigError(str(error)) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    known = [field.name for field in dataclasses.fields(config_class)]
    for key in values:
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r}{_suggest(str(key), known)}")
        try:
            values[key] = coerce_field_value(config_class, key, values[key], f"{path}: {key}")
        except ValueError as error:
            raise ConfigError(str(error)) from None
    return values


def take_dotted_options(argv: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Split `--stage.field VALUE` / `--stage.field=VALUE` options off `argv`: (the rest, {stage: {field: value}}).
    Values are read as YAML scalars (`4`, `true`, `1.0e-6`); the stage's config converts them to its types."""
    rest, dotted = [], {}
    index = 0
    while index < len(argv):
        argument = argv[index]
        name = argument[2:].split("=", 1)[0] if argument.startswith("--") else ""
        if "." in name and not name.startswith("."):
            if "=" in argument:
                value = argument.split("=", 1)[1]
            elif index + 1 < len(argv):
                value, index = argv[index + 1], index + 1
            else:
                raise ConfigError(f"--{name}: expected a value")
            stage, _, key = name.partition(".")
            dotted.setdefault(stage, {})[key] = yaml.safe_load(value) if value.strip() else value
        else:
            rest.append(argument)
        index += 1
    return rest, dotted


@functools.cache
def _annotations(config_class: type) -> dict[str, Any]:
    # The class annotations, resolved; not `Field.type`, which HfArgumentParser rewrites (Optional[str] -> str).
    return typing.get_type_hints(config_class)


def _declared_kinds(config_class: type, name: str) -> list[str]:
    """The kinds a field accepts, from its annotation: `lr: float` -> ["float"], `lora: dict | str | None` ->
    ["dict", "str", "None"]."""
    annotation = _annotations(config_class)[name]
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    return ["None" if member is type(None) else getattr(typing.get_origin(member) or member, "__name__", str(member))
            for member in members]  # fmt: skip


def _convert(kind: str, value: Any) -> Any:
    """`value` as `kind`, converting only what cannot lose meaning; TypeError/ValueError otherwise."""
    if kind == "None":
        if value is None:
            return None
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
    elif kind in ("int", "float") and not isinstance(value, (bool, list, dict)) and value is not None:
        number = float(value)  # YAML reads 1e-4 (no dot) as a string
        if kind == "float":
            return number
        if number.is_integer():
            return int(number)
    elif kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # output_dir: 2024
    elif kind == "dict":
        if isinstance(value, dict):
            return value
    elif kind not in ("int", "float"):
        return value  # a kind this checker does not know is left to the config's own checks
    raise TypeError(kind)


def not_finite(value: Any) -> bool:
    """Whether `value` reads as a number that is NaN or infinite (`inf`, `-inf`, `nan`, YAML's `.inf`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        return not math.isfinite(float(value))
    except (ValueError, OverflowError):
        return False


def coerce_field_value(config_class: type, name: str, value: Any, option: str) -> Any:
    """`value` converted to the declared type of field `name` of `config_class` (a float for `lr: float` given
    as the YAML string '1e-6', an int for 4.0); ValueError naming `option` when it does not convert (a list for
    a float, 2.5 for an int, "maybe" for a bool)."""
    kinds = _declared_kinds(config_class, name)
    if {"int", "float"} & set(kinds) and "str" not in kinds and not_finite(value):
        # float() reads 'inf' and 'nan' (and YAML's .inf / .nan): a range check written `v > 0` lets inf through,
        # and NaN fails no comparison at all, so a run would train to NaN weights and report success.
        raise ValueError(f"{option}: expected a finite number, got {value!r}")
    for kind in kinds:
        try:
            return _convert(kind, value)
        except (TypeError, ValueError):
            continue
    expected = " or ".join("null" if kind == "None" else kind for kind in kinds)
    raise ValueError(f"{option}: expected {expected}, got {value!r}") from None


def check_field_types(config: Any) -> None:
    """Convert every field of the dataclass `config` to its declared type in place (`coerce_field_value`);
    ValueError naming the first field that does not convert. The shared first check of every stage config's
    `__post_init__`, so that range checks and the stages only ever see values of the right type."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        setattr(config, item.name, coerce_field_value(type(config), item.name, value, item.name))


TRUST_REMOTE_CODE_HELP = (
    "true: let transformers run the code in a model folder whose config.json names it (auto_map), for "
    "architectures transformers does not ship; read that code first (default: false, such a folder is refused)"
)


def take_trust_remote_code(argv: list[str]) -> list[str]:
    """`argv` without `--trust_remote_code [true|false]` (every command's option), after applying it to this
    process (`align.modeling.allow_remote_code`; absent: false); ConfigError for a value that is not a boolean."""
    from .modeling import allow_remote_code

    kept, index, trusted = [], 0, False
    while index < len(argv):
        item = argv[index]
        if item == "--trust_remote_code" or item.startswith("--trust_remote_code="):
            if "=" in item:
                value = item.split("=", 1)[1]
            elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
                value, index = argv[index + 1], index + 1
            else:
                value = "true"
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ConfigError(f"--trust_remote_code: expected true or false, got {value!r}")
            trusted = value.lower() in ("true", "yes", "1")
        else:
            kept.append(item)
        index += 1
    allow_remote_code(trusted)
    return kept


def build_config(
    config_class: type[ConfigT],
    argv: list[str] | None = None,
    description: str | None = None,
    prog: str | None = None,
) -> ConfigT:
    """Parse `--config FILE` and overrides into `config_class`; raises `ConfigError` on any mistake.

    `description` heads `--help` (default: the running script's docstring); `prog` names the command in it.
    A config with an `overrides` field (the rounds) also takes `--stage.field VALUE` options, merged over the
    YAML file's `overrides` mapping."""
    argv = list(sys.argv[1:] if argv is None else argv)
    dotted: dict[str, dict[str, Any]] = {}
    if "overrides" in {f.name for f in dataclasses.fields(config_class)}:
        argv, dotted = take_dotted_options(argv)
    parser = _OneLineParser(
        config_class,
        prog=prog,
        allow_abbrev=False,  # a mistyped option is an error, not a prefix
        description=description or getattr(sys.modules.get("__main__"), "__doc__", None),
        formatter_class=_HelpFormatter,
    )
    for action in parser._actions:
        # HfArgumentParser gives a `--no_X` switch X's own help, which then reads as its opposite.
        if isinstance(action, argparse._StoreFalseAction) and action.option_strings[0].startswith("--no_"):
            action.help = f"turn --{action.dest} off (it is on by default)"
    parser.add_argument("--config", type=str, default=None, help="YAML file of config values (CLI overrides it)")
    parser.add_argument("--trust_remote_code", type=str, default="false", help=TRUST_REMOTE_CODE_HELP)
    argv = take_trust_remote_code(argv)
    config_path = None
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ConfigError("--config: expected a YAML file path")
        config_path = argv[index + 1]
        del argv[index : index + 2]
    else:
        config_path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        argv = [a for a in argv if not a.startswith("--config=")]
    if config_path:
        parser.set_defaults(**load_yaml_config(config_path, config_class))
    if dotted:
        merged = dict(parser.get_default("overrides") or {})
        for stage, values in dotted.items():
            merged[stage] = {**(merged.get(stage) or {}), **values}
        parser.set_defaults(overrides=merged)
    try:
        # Unknown options first: a typo should be reported as such, not as the missing value it was meant to set.
        _, remaining = parser.parse_known_args(args=argv)
        if remaining:
            known = [f"--{field.name}" for field in dataclasses.fields(config_class)]
            option = remaining[0].split("=", 1)[0]
            raise ConfigError(f"unknown option {option}{_suggest(option, known)}")
        config = parser.parse_args_into_dataclasses(args=argv)[0]  # then a namespace holding --config
    except (TypeError, ValueError, FileNotFoundError) as error:  # argparse's type errors, __post_init__'s checks
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(str(error).splitlines()[0]) from None
    return config


def parse_config(
    config_class: type[ConfigT],
    argv: list[str] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> ConfigT:
    """`build_config` for commands: on a mistake, print `prog: error: ...` on one line and exit with status 2."""
    use_every_core_of_a_lone_cpu_process()
    say_one_line_when_interrupted(prog)
    try:
        return build_config(config_class, argv, description=description, prog=prog)
    except ConfigError as error:
        exit_with_error(str(error), prog)


def say_one_line_when_interrupted(prog: str | None) -> None:
    """Make Ctrl-C end the command with one line saying where its runs stand and that the same command resumes
    (`align.checkpoint.interrupted_message`), printed by the first process only, instead of a traceback per
    process. Other exceptions keep Python's usual report."""
    usual = sys.excepthook

    def hook(kind, value, traceback):
        if not issubclass(kind, KeyboardInterrupt):
            return usual(kind, value, traceback)
        from .checkpoint import interrupted_message

        if int(os.environ.get("RANK", "0")) == 0:
            print(f"\n{prog or Path(sys.argv[0]).name}: {interrupted_message()}", file=sys.stderr, flush=True)

    sys.excepthook = hook


def use_every_core_of_a_lone_cpu_process() -> None:
    """Give a single CPU process every core when `accelerate launch` pinned it to one thread.

    With no accelerate config, `accelerate launch` starts one process with OMP_NUM_THREADS=1 (it only spreads
    the cores over processes when `--cpu --num_processes N` is given), which halves the demo's speed on a
    2-core machine. Several processes, a GPU, or `--num_cpu_threads_per_process` are left as they are.
    """
    launched_by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in os.environ
    alone = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if launched_by_accelerate and alone and os.environ.get("OMP_NUM_THREADS") == "1" and not torch.cuda.is_available():
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


# What a recipe reports as one line (exit status 2) rather than a traceback: a mistake in its input (the
# stages raise ValueError / FileNotFoundError naming the file, record, field or option), a full disk, a reward
# source that cannot score (a reward server that stays away; the run resumes once it is back).
ONE_LINE_ERRORS = (FileNotFoundError, ValueError, DiskFullError, RewardSourceError)


def exit_with_error(message: str, prog: str | None = None) -> NoReturn:
    """Print one error line (no traceback) and exit with status 2.

    Under a launch of several processes every process finds the same mistake in the same input; the line is
    printed by the first of them to reach here, so that the user reads it once, not once per process."""
    release_run_locks()  # and remove the folders this run created for an output folder it never used
    line = f"{prog or Path(sys.argv[0]).name}: error: {message}"
    if first_process_to_say(line):
        print(line, file=sys.stderr)
    raise SystemExit(2)


def first_process_to_say(line: str) -> bool:
    """Whether this process is the first of its launch to print `line` (always true for a single process).

    The processes of a torchrun / `accelerate launch --multi_gpu` launch share a key-value store that the launcher
    itself hosts (TORCHELASTIC_USE_AGENT_STORE), which outlives any of them: each process adds 1 to a key made of
    the line, and only the one that reads 1 prints. A process whose line differs (a file missing on one node
    only) has a key of its own and prints it. Under any other launcher, or if the store cannot be reached
    within a few seconds, every process prints: a line said twice is better than one never said."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not several or os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return True
    try:
        import datetime
        import hashlib

        import torch.distributed as dist

        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=datetime.timedelta(seconds=5))  # fmt: skip
        launch = f"{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        key = f"align/said/{launch}/{hashlib.sha256(line.encode()).hexdigest()}"
        return store.add(key, 1) == 1
    except Exception:  # noqa: BLE001  (no store, no port: say it rather than risk saying nothing)
        return True


def end_processes() -> None:
    """At the end of a recipe: every process waits for the others, then the process group is taken down, so that
    no process exits while gloo's threads still talk to one that has not (a race that can abort a finished run
    with "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device_precision(mixed_precision: str) -> str:
    """The precision a `mixed_precision` setting gets on this machine: "auto" is bf16 where the GPU has it, else
    fp32 ("no"); bf16 or fp16 that the device cannot do (a CPU, a GPU without bf16) falls back to fp32 with a
    log line instead of running slowly or failing."""
    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if mixed_precision == "auto":
        return "bf16" if bf16_ok else "no"
    if (mixed_precision == "bf16" and not bf16_ok) or (mixed_precision == "fp16" and not cuda):
        device = torch.cuda.get_device_name() if cuda else "CPU"
        logger.warning(
            "mixed_precision=%s: not supported on this device (%s); training in fp32", mixed_precision, device
        )
        return "no"
    return mixed_precision


def precision_flags(mixed_precision: str) -> dict[str, bool]:
    """TrainingArguments' bf16 / fp16 flags for a `mixed_precision` setting (`device_precision`)."""
    mixed_precision = device_precision(mixed_precision)
    return {"bf16": mixed_precision == "bf16", "fp16": mixed_precision == "fp16"}


@dataclass
class TrainerStageConfig:
    """Settings shared by the stages that ride on transformers' Trainer (pretraining, SFT, reward models).

    The optimizer is the paper's everywhere (AdamW beta 0.9 / 0.95, eps 1e-5, clip 1.0; docs/method.md §2) with a
    cosine schedule that decays to `min_lr_ratio` of the peak. Each stage sets its own defaults on top.
    """

    output_dir: str = field(default="runs/stage", metadata={"help": "run folder: checkpoints, metrics, final/"})
    lr: float = field(default=1e-5, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "cosine decays to this fraction of the peak"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-5, metadata={"help": "AdamW epsilon"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    per_device_batch_size: int = field(default=8, metadata={"help": "examples per device and micro-step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps (-1: run the epochs)"})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 where supported), no, bf16, fp16"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward"})
    save_steps: int = field(default=500, metadata={"help": "checkpoint every N optimizer steps"})
    save_total_limit: int = field(default=2, metadata={"help": "keep this many checkpoints"})
    logging_steps: int = field(default=10, metadata={"help": "log metrics every N steps"})
    report_to: str = field(default="none", metadata={"help": "extra loggers: none, tensorboard, wandb"})
    seed: int = field(default=0, metadata={"help": "seed of model init and data order"})
    resume: bool = field(default=True, metadata={"help": RESUME_HELP})
    extend: bool = field(default=False, metadata={"help": EXTEND_HELP})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_ranges(
            self,
            positive=("per_device_batch_size", "gradient_accumulation_steps", "save_steps", "logging_steps"),
            non_negative=("weight_decay", "max_grad_norm", "save_total_limit"),
            fraction=("adam_beta1", "adam_beta2", "adam_epsilon"),
        )
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps: must be positive (or -1 to run the epochs), got {self.max_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision: expected auto, no, bf16 or fp16, got {self.mixed_precision!r}")


def check_ranges(
    config: Any,
    *,
    positive: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
    fraction: tuple[str, ...] = (),
) -> None:
    """ValueError naming the first field of `config` outside its range: `positive` (> 0), `non_negative` (>= 0),
    `fraction` (in (0, 1]). The stages' configs call it from `__post_init__`, so a value is refused before any
    work rather than training 0 steps or flipping a sign."""
    for names, test, expected in (
        (positive, lambda v: v > 0, "must be positive"),
        (non_negative, lambda v: v >= 0, "must be >= 0"),
        (fraction, lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ):
        for name in names:
            value = getattr(config, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not test(value):
                raise ValueError(f"{name}: {expected}, got {value!r}")


def trainer_kwargs(config: TrainerStageConfig) -> dict:
    """The `TrainingArguments` keywords every Trainer-based stage shares (TRL's configs take them too)."""
    return dict(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        adam_epsilon=config.adam_epsilon,
        max_grad_norm=config.max_grad_norm,
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        # Trainer copies this into the model's config, which the stage then saves: keep the `use_cache: true` every
        # checkpoint ships (TRL's trainers pass use_cache=False to each training forward themselves).
        use_cache=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=None,  # rotated by step number by align.checkpoint.rotate_checkpoints (not by mtime)
        logging_steps=config.logging_steps,
        # A NaN or inf loss is logged as it is (Trainer would log the mean of the earlier steps instead), and the
        # run stops on it (align.checkpoint.StopOnNonFinite).
        logging_nan_inf_filter=False,
        report_to=[] if config.report_to == "none" else [config.report_to],
        seed=config.seed,
        data_seed=config.seed,
        # Without a GPU, processes launched together must say so to join one gloo group (MULTI_CPU).
        use_cpu=not torch.cuda.is_available(),
        **precision_flags(config.mixed_precision),
    )
