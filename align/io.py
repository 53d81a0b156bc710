"""File I/O shared by the stages: atomic writes (a temporary name, then a rename, so a crash never leaves half
a file), JSONL reading, and one loader for tabular data given as a local file or a `datasets` name."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line, atomically; returns the number of records."""
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSONL file; a line that is not JSON raises ValueError naming the file and line."""
    records = []
    with open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: line {number}: not valid JSON ({error})") from None
    return records


TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")


def load_table(source: str, split: str = "train") -> datasets.Dataset:
    """A local .jsonl / .json / .parquet file, or else a `datasets` name (network needed), as a Dataset."""
    path = Path(source)
    if path.suffix in TABLE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"dataset: no file at {path}")
        builder = "parquet" if path.suffix == ".parquet" else "json"
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    return datasets.load_dataset(source, split=split)
