"""The records of a run of rounds: `manifest.json` (per round and stage: what ran, from what, what it measured,
under which package versions) and the facts each stage's completion marker adds to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checkpoint import DONE_MARKER
from ..config import load_yaml_config
from ..io import atomic_write_text, read_json_object


class Manifest:
    """`manifest.json` of a run: per round and stage, what ran, from what, and what it measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = read_json_object(path, ("rounds",)) if path.is_file() else {"rounds": {}}
        self.data["versions"] = package_versions()  # this run's; each stage also keeps the versions it ran under

    def record(self, round_number: int, stage: str, **facts: Any) -> None:
        # A run resumed or extended under newer packages keeps what each earlier stage was trained with.
        self.data["rounds"].setdefault(str(round_number), {})[stage] = {**facts, "versions": self.data["versions"]}
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    versions = {"align": __version__}  # by import: the distribution is align-rlhf
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def stage_settings(config_class: type, yaml_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a stage takes from the user: its YAML file's values, then the command line's `--<stage>.<field>`
    overrides (recorded with the finished stage, so that a rerun can say which of them changed)."""
    return {**load_yaml_config(yaml_path, config_class), **(overrides or {})}


def stage_config(config_class: type, yaml_path: str, overrides: dict[str, Any] | None = None, **chained: Any) -> Any:
    """A stage's config: its YAML file, the command line's overrides, then the fields the rounds chain."""
    return config_class(**{**stage_settings(config_class, yaml_path, overrides), **chained})


UNSET = object()  # a settings key one side of a comparison lacks


def changed_options(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """"name recorded (now new)" for each option a finished stage was made with that the rerun gives otherwise; a
    mapping (a stage's `settings`) by its keys: "settings.lr 1e-05 (now 3e-05)", "unset" for a key one side lacks.
    An option the record does not name (added to align since the stage was made) says nothing of a change."""
    changed = []
    for name, value in now.items():
        if name not in recorded or recorded[name] == value:
            continue
        if isinstance(value, dict) and isinstance(recorded[name], dict):
            before = recorded[name]
            changed += [f"{name}.{key} {_shown(before, key)} (now {_shown(value, key)})"
                        for key in sorted({*before, *value}, key=str) if before.get(key, UNSET) != value.get(key, UNSET)]  # fmt: skip
        else:
            changed.append(f"{name} {recorded[name]!r} (now {value!r})")
    return changed


def _shown(values: dict[str, Any], key: str) -> str:
    return repr(values[key]) if key in values else "unset"


def stage_done_facts(folder: Path) -> dict[str, Any]:
    """The data sources a stage recorded in its DONE.json, for the manifest."""
    done = folder / DONE_MARKER
    sources = json.loads(done.read_text()).get("data_sources") if done.is_file() else None
    return {"data_sources": sources} if sources else {}
