"""File I/O shared by the stages: atomic writes (a temporary name, then a rename, so a crash never leaves half
a file), JSONL reading, and one loader for tabular data given as a local file or a `datasets` name."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import datasets
import yaml


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


class DiskFullError(Exception):
    """The disk of a folder being written has no room left; the message says how much is free and needed."""


# How a full disk shows: the errno of OSError; torch.save's zip writer ("[enforce fail at inline_container.cc]
# ... unexpected pos"), safetensors ("os error 28") and others in their messages.
_DISK_FULL_SIGNS = ("No space left on device", "Disk quota exceeded", "unexpected pos", "os error 28")


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a write that failed for lack of disk space."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(sign in str(error) for sign in _DISK_FULL_SIGNS)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError


def free_bytes(folder: str | os.PathLike) -> int:
    """Free space on the disk of `folder` (of its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """DiskFullError before any work when the disk of `folder` has less than `needed` bytes free for `what`."""
    free = free_bytes(folder)
    if free < needed:
        raise DiskFullError(
            f"output_dir {folder}: {human_bytes(free)} free on its disk, {what} needs about {human_bytes(needed)}; "
            "free some space or choose an output_dir on a larger disk"
        )


@contextlib.contextmanager
def naming_a_full_disk(folder: str | os.PathLike, needed: int | None = None, what: str = "the run"):
    """Turn a write that fails for lack of space inside the block into one DiskFullError saying so, with the
    free space and, when known, the space `what` needs (instead of torch's "unexpected pos" traceback)."""
    try:
        yield
    except Exception as error:
        if not is_disk_full(error):
            raise
        need = f"; {what} needs about {human_bytes(needed)}" if needed else ""
        raise DiskFullError(
            f"disk full writing to {folder}: {human_bytes(free_bytes(folder))} free{need}; free some space and run "
            "again (the run resumes from its last complete checkpoint)"
        ) from None


CHECKOUT = Path(__file__).resolve().parents[1]  # the source checkout of an editable install (`pip install -e .`)
PACKAGE = Path(__file__).resolve().parent
# What align ships inside the package (a wheel holds them too), by the path its defaults and docs give them: the
# configs (recipes/configs in a checkout is a link to align/configs) and the demo world's tokenizer.
SHIPPED_CONFIGS = PACKAGE / "configs"
SHIPPED_FOLDERS = {("recipes", "configs"): SHIPPED_CONFIGS, ("data", "tokenizer"): PACKAGE / "world" / "tokenizer"}


def shipped_path(path: str | os.PathLike) -> Path:
    """`path` itself, or, for a relative `recipes/configs/...` or `data/tokenizer` path (the configs and the demo
    tokenizer that align ships, which its defaults name) that is not found from the working folder, the same file
    in the installed package: `align round 3` then works from any folder and from a wheel, as a command should."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    for prefix, folder in SHIPPED_FOLDERS.items():
        shipped = folder.joinpath(*path.parts[len(prefix) :])
        if path.parts[: len(prefix)] == prefix and shipped.exists():
            return shipped
    return path  # absent: named as the user gave it


def shipped_config(name: str, stage: str) -> Path | None:
    """The config align ships as `name` for `stage` (`world_small` for "sft": align/configs/sft/world_small.yaml),
    or None."""
    path = SHIPPED_CONFIGS / stage / f"{name}.yaml"
    return path if "/" not in name and path.is_file() else None


def shipped_config_names(stage: str) -> list[str]:
    """The names of the configs align ships for `stage`."""
    return sorted(path.stem for path in (SHIPPED_CONFIGS / stage).glob("*.yaml"))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, then rename it into place."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line, atomically; returns the number of records."""
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


class UnreadableRecord(dict):
    """Stands in for a line that is not UTF-8 text or not JSON, so that a reader that skips bad records
    (`load_preferences(on_error="skip")`) and one that stops at them take the same path."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def _not_utf8(data: bytes, error: UnicodeDecodeError) -> str:
    line = data[: error.start].count(b"\n") + 1
    return f"line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8"


def read_text(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file; ValueError naming the file and line of a byte that is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: {_not_utf8(data, error)}") from None


def read_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str | UnreadableRecord]]:
    """(line number, text) of each line of a UTF-8 file (gzip-compressed if it ends with .gz), without the line
    break; a line that is not UTF-8 comes as an `UnreadableRecord` saying so."""
    path = Path(path)
    number = 0
    with gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb") as lines:
        try:
            for number, raw in enumerate(lines, start=1):
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as error:
                    yield (
                        number,
                        UnreadableRecord(f"not UTF-8 text (byte 0x{raw[error.start]:02x}); save the file as UTF-8"),
                    )
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:  # a download cut short, a damaged archive
            raise ValueError(
                f"{path}: after line {number}: the gzip file is damaged or cut short ({error}); download it again"
            ) from None


def jsonl_records(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """("record 3 (line 4)", record) for each non-blank line of a JSONL file (or .jsonl.gz); a line that is not
    UTF-8 or not JSON comes as an `UnreadableRecord`."""
    index = 0
    for number, line in read_text_lines(path):
        if isinstance(line, str) and not line.strip():
            continue
        where = f"record {index} (line {number})"
        if isinstance(line, UnreadableRecord):
            yield where, line
        else:
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as error:
                yield where, UnreadableRecord(f"not valid JSON ({error})")
        index += 1


def read_json_object(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object in the file `path` (a record align wrote: a manifest, metrics, a marker); ValueError naming
    the file when it is not UTF-8 JSON, not an object, or lacks one of the `required` keys (a damaged or
    hand-edited record), instead of a traceback."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {error.start}); expected the JSON record align writes"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); the file is damaged (restore or delete it)") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}; the file is damaged")
    missing = [key for key in required if key not in value]
    if missing:
        raise ValueError(f"{path}: has no {missing[0]!r}; the file is damaged (restore or delete it)")
    return value


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSONL file; a line that is not UTF-8, not JSON or not an object raises ValueError naming the
    file and line."""
    return [record for _, record in strict_records(str(path), jsonl_records(path))]


def strict_records(name: str, records: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """`records` with the first unreadable or non-object record raised as ValueError naming `name` and where."""
    for where, record in records:
        if isinstance(record, UnreadableRecord):
            raise ValueError(f"{name}: {where}: {record.reason}")
        if not isinstance(record, dict):
            raise ValueError(f"{name}: {where}: expected a JSON object, got {json.dumps(record)[:60]}")
        yield where, record


TABLE_SUFFIXES = (".jsonl", ".json", ".parquet")


def looks_like_a_path(source: str) -> bool:
    """A source meant as a local file, not a dataset name ("owner/name"): it has a file suffix this toolkit
    reads, starts like a path ("/", ".", "~") or has more than one "/"."""
    return (
        Path(source).suffix.lower() in (*TABLE_SUFFIXES, ".txt", ".gz")
        or source.startswith((".", "/", "~"))
        or source.count("/") > 1
    )


def table_records(source: str, option: str, split: str = "train") -> tuple[str, Iterator[tuple[str, Any]]]:
    """(name, iterator of (where, record)) of a local .jsonl / .jsonl.gz / .json / .parquet file, a folder
    written by `datasets`' `save_to_disk`, or else a `datasets` name (network needed). `option` names the setting
    in errors: a missing file, a dataset that does not load (offline, say), a file type that is not read."""
    path = Path(source)
    name = str(source)
    suffix = path.suffix.lower()
    if path.is_dir():
        table = load_disk_dataset(path, option, split)
        return name, ((f"record {i}", row) for i, row in enumerate(table))
    if path.is_file():
        if suffix == ".jsonl" or name.lower().endswith(".jsonl.gz"):  # HH-RLHF ships train.jsonl.gz
            return name, jsonl_records(path)
        if suffix == ".json":
            try:
                data = json.loads(read_text(path))
            except json.JSONDecodeError as error:
                raise ValueError(f"{name}: not valid JSON ({error})") from None
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise ValueError(f"{name}: expected a JSON list of records (or {{'data': [...]}})")
            return name, ((f"record {i}", row) for i, row in enumerate(data))
        if suffix == ".parquet":
            try:
                table = datasets.load_dataset("parquet", data_files=name, split="train")
            except Exception as error:  # noqa: BLE001  (pyarrow and datasets raise several types)
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise ValueError(f"{name}: not a readable parquet file ({reason})") from None
            return name, ((f"record {i}", row) for i, row in enumerate(table))
        raise ValueError(
            f"{option}: {name}: unsupported file type {suffix!r}, expected .jsonl, .jsonl.gz, .json or .parquet"
        )
    if looks_like_a_path(name):
        raise FileNotFoundError(f"{option}: no file at {name}")
    table = load_hub_dataset(name, option, split)
    return name, ((f"record {i}", row) for i, row in enumerate(table))


def load_disk_dataset(folder: Path, option: str, split: str = "train") -> datasets.Dataset:
    """A `Dataset` saved with `save_to_disk` (a `DatasetDict`: its `split`); ValueError naming `option` for a
    folder that is not one, or a dict without that split."""
    if not ((folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()):
        raise ValueError(
            f"{option}: {folder} is a folder but not one written by datasets' save_to_disk (no state.json or "
            "dataset_dict.json); expected such a folder or a .jsonl, .json or .parquet file"
        )
    try:
        table = datasets.load_from_disk(str(folder))
    except Exception as error:  # noqa: BLE001  (datasets and pyarrow raise several types for a damaged folder)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{option}: {folder}: not a readable save_to_disk folder ({reason})") from None
    if isinstance(table, datasets.DatasetDict):
        if split not in table:
            raise ValueError(f"{option}: {folder} has no split {split!r}; it has {sorted(table)}")
        table = table[split]
    return table


def load_hub_dataset(name: str, option: str, split: str = "train") -> datasets.Dataset:
    """`datasets.load_dataset(name, split=split)`; a name that does not load (no such dataset, no network, the
    Hub offline) is one ValueError naming `option` and the name."""
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as error:  # noqa: BLE001  (datasets raises a dozen types for "could not get it")
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        offline = any(
            os.environ.get(v, "0").lower() in ("1", "true") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
        )
        hint = " (the Hub is offline here: HF_HUB_OFFLINE=1)" if offline else ""
        raise ValueError(
            f"{option}: {name!r} is not a local file and did not load as a Hub dataset{hint}: {reason}; "
            "give a local .jsonl, .json or .parquet file or a save_to_disk folder"
        ) from None


def load_table(source: str, split: str = "train", option: str = "dataset") -> datasets.Dataset:
    """A local .jsonl / .json / .parquet file or save_to_disk folder, or else a `datasets` name (network
    needed), as a Dataset;
    records are checked to be objects, and a bad line is named by file and line."""
    name, records = table_records(source, option, split)
    return datasets.Dataset.from_list([record for _, record in strict_records(name, records)])


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (lines {seen[key]} and {key_node.start_mark.line + 1})",
                key_node.start_mark,
            )  # fmt: skip
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: plain YAML keeps the last
    one silently, so `lr: 1e-5` further down a config would quietly win over the `lr:` a user edited."""


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, refusing duplicate keys (yaml.YAMLError naming the key and both lines)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)
