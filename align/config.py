"""Recipe configuration: one dataclass per stage, read from YAML with any field overridable on the command line.

    config = parse_config(PretrainConfig)            # argv: --config recipes/configs/pretrain/world.yaml --lr 1e-4

Config fields carry `help` metadata (TRL style), so `--help` documents every option. Mistakes never end in a
traceback: an unknown YAML key or command-line option, a value of the wrong type, or a value the config's own
validation refuses prints one line naming the key (with a close match when there is one) and exits with 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
import yaml
from transformers import HfArgumentParser

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A configuration mistake; the message names the key or file."""


class _OneLineParser(HfArgumentParser):
    """argparse prints usage plus a message on errors; recipes print the message alone."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_yaml_config(path: str | Path, config_class: type) -> dict[str, Any]:
    """The YAML mapping of `path`, every key checked against the fields of `config_class`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no file at {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    known = [field.name for field in dataclasses.fields(config_class)]
    for key in values:
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r}{_suggest(str(key), known)}")
    return values


def build_config(config_class: type[ConfigT], argv: list[str] | None = None) -> ConfigT:
    """Parse `--config FILE` and overrides into `config_class`; raises `ConfigError` on any mistake."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _OneLineParser(config_class, allow_abbrev=False)  # a mistyped option is an error, not a prefix
    parser.add_argument("--config", type=str, default=None, help="YAML file of config values (CLI overrides it)")
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
    try:
        # Unknown options first: a typo should be reported as such, not as the missing value it was meant to set.
        _, remaining = parser.parse_known_args(args=argv)
        if remaining:
            known = [f"--{field.name}" for field in dataclasses.fields(config_class)]
            option = remaining[0].split("=", 1)[0]
            raise ConfigError(f"unknown option {option}{_suggest(option, known)}")
        config = parser.parse_args_into_dataclasses(args=argv)[0]  # then a namespace holding --config
    except (TypeError, ValueError) as error:  # argparse type errors, the config's own __post_init__ checks
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(str(error).splitlines()[0]) from None
    return config


def parse_config(config_class: type[ConfigT], argv: list[str] | None = None, prog: str | None = None) -> ConfigT:
    """`build_config` for recipes: on a mistake, print `prog: error: ...` on one line and exit with status 2."""
    try:
        return build_config(config_class, argv)
    except ConfigError as error:
        exit_with_error(str(error), prog)


def exit_with_error(message: str, prog: str | None = None) -> NoReturn:
    """Print one error line (no traceback) and exit with status 2."""
    prog = prog or Path(sys.argv[0]).name
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def precision_flags(mixed_precision: str) -> dict[str, bool]:
    """TrainingArguments' bf16 / fp16 flags for a `mixed_precision` setting ("auto": bf16 where supported)."""
    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return {"bf16": mixed_precision == "bf16", "fp16": mixed_precision == "fp16"}
