"""Where a stage's data comes from, said out loud: the user's files (or `datasets` names) or, only when asked,
the synthetic world.

The world (`align.world`) is the demo's data and the test bed; it is never a silent default. A stage's data
options have no default: a run names its files, or "world" to ask for the world explicitly (the `world_*`
recipe configs do). Every stage prints its sources when it starts and records them in its `DONE.json`
(`data_sources`): a file by path and content hash, a `datasets` name as is, the world with its seed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

WORLD = "world"


def split_sources(value: str | None) -> list[str]:
    """The comma-separated sources of an option ('a.jsonl,b.jsonl'), blanks dropped."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def require_source(value: str | None, option: str, what: str) -> None:
    """ValueError naming `option` when it is unset: a run names its data (or 'world' for the demo's)."""
    if not split_sources(value):
        raise ValueError(f"{option}: required, {what} (or 'world' for the demo's synthetic data)")


def is_world(value: str | None) -> bool:
    """Whether every source of an option is the synthetic world."""
    sources = split_sources(value)
    return bool(sources) and all(source == WORLD for source in sources)


def file_hash(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def describe_source(source: str, world_seed: int = 0) -> str:
    """One source for logs and markers: 'world(seed=0)', 'path (sha256 1a2b...)', 'path (folder)' (a
    checkpoint) or 'datasets:name'."""
    if source == WORLD:
        return f"world(seed={world_seed})"
    path = Path(source)
    if path.is_file():
        return f"{path} (sha256 {file_hash(path)})"
    if path.is_dir():
        return f"{path} (folder)"
    return f"datasets:{source}"


def describe_sources(value: str | None, world_seed: int = 0) -> list[str]:
    """`describe_source` of each comma-separated source of an option."""
    return [describe_source(source, world_seed) for source in split_sources(value)]


def announce_sources(stage: str, options: dict[str, str | None], world_seed: int = 0) -> dict[str, list[str]]:
    """Print a stage's data sources (option -> sources) and return them for its completion marker."""
    described = {
        option: describe_sources(value, world_seed) for option, value in options.items() if split_sources(value)
    }
    for option, sources in described.items():
        if int(os.environ.get("RANK", "0")) == 0:  # once, not once per process
            print(f"[{stage}] {option}: {', '.join(sources)}", flush=True)
    return described
