"""Push and pull checkpoints: a Hugging Face Hub repo (one branch per stage), a local folder or an fsspec URL.

    push_checkpoint("runs/demo/round-3/ppo/final", "me/align-demo", revision="round-3-ppo", metrics={...})
    pull_checkpoint("me/align-demo@round-3-ppo", "runs/from_hub/round-3-ppo")

A Hub target gets the folder's files (safetensors, config, tokenizer; or a LoRA adapter folder) plus a
model card (align.cards: architecture, training data with hashes, settings, metrics, how to load it), as one
commit on its own branch. A target that is a local path or an fsspec URL
(`file://`, `s3://`, ... shared storage on clusters) gets the files under `<target>/<revision>/`. The Hub
endpoint is `endpoint`, else `HF_ENDPOINT`; the token is `token`, else the usual places (`HF_TOKEN`, the
cached login). Failures raise `HubError` naming the target and the cause; nothing local is touched by a push.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import fsspec
from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from .cards import model_card
from .checkpoint import (
    SAFETENSORS_HOWTO,
    WRITTEN_MARKER,
    pickle_weight_files,
    require_model_dir,
    write_directory_atomic,
)

try:  # the HTTP library huggingface_hub talks through: httpx2 in huggingface_hub 2.x, httpx before
    from httpx2 import HTTPError as TransportError
except ImportError:  # pragma: no cover
    from httpx import HTTPError as TransportError


class HubError(RuntimeError):
    """A push or pull that failed; the message names the target, the revision and the cause."""


def is_hub_target(target: str) -> bool:
    """A Hub repo id ("owner/name" or "name"), as opposed to a local path or an fsspec URL.

    Local: a URL (`file://`, `s3://`), a path starting with `.`, `/` or `~`, a path that exists, a path whose
    first folder exists here (`runs/hub` when `runs/` does, even before `runs/hub` is made), or a path with
    more than one `/` (a repo id has at most one). Anything else is a repo id; write `./name` for a new local
    folder that could be read as one."""
    if "://" in target or target.startswith((".", "/", "~")) or Path(target).exists():
        return False
    parts = Path(target).parts
    return len(parts) <= 2 and not (len(parts) == 2 and Path(parts[0]).is_dir())


def split_revision(spec: str) -> tuple[str, str]:
    """ "repo@revision" -> (repo, revision); the revision defaults to "main"."""
    target, _, revision = spec.partition("@")
    return target, revision or "main"


def load_arguments(repo_id: str, revision: str) -> str:
    """How a pushed checkpoint is named in `from_pretrained(...)`: the repo and revision on the Hub; for a local or
    fsspec target the folder `<target>/<revision>` itself."""
    if is_hub_target(repo_id):
        return f'"{repo_id}", revision="{revision}"'
    return '"' + (f"{repo_id.rstrip('/')}/{revision}" if "://" in repo_id else
                  str(Path(repo_id).expanduser().resolve() / revision)) + '"'  # fmt: skip


def push_checkpoint(
    folder: str | os.PathLike,
    target: str,
    revision: str,
    *,
    metrics: dict[str, Any] | None = None,
    base: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> str:
    """Upload a checkpoint folder to `target` at `revision`; returns where it went (a URL or a path)."""
    folder = require_checkpoint_dir(folder, "checkpoint to push")
    card = model_card(folder, title=f"{target} @ {revision}", where=load_arguments(target, revision), stage=revision,
                      base=base, metrics=metrics)  # fmt: skip
    try:
        if not is_hub_target(target):
            return _copy_to_storage(folder, target, revision, card)
        api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT"), token=token)
        api.create_repo(target, exist_ok=True)
        if revision != "main":
            api.create_branch(target, branch=revision, exist_ok=True)
        operations = [
            CommitOperationAdd(path_in_repo=str(path.relative_to(folder)), path_or_fileobj=str(path))
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name not in ("README.md", WRITTEN_MARKER)
        ]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
        commit = api.create_commit(target, operations, commit_message=f"align: {revision}", revision=revision)
        return commit.commit_url
    except (HfHubHTTPError, TransportError, OSError, ValueError) as error:
        hint = f" (for a local folder, write ./{target})" if is_hub_target(target) and "/" in target else ""
        raise HubError(f"push of {folder} to {target}@{revision} failed: {_cause(error)}{hint}") from error


def pull_checkpoint(
    spec: str, local_dir: str | os.PathLike, *, endpoint: str | None = None, token: str | None = None
) -> Path:
    """Download `repo@revision` (or `<path or URL>@revision`) into `local_dir` (atomically); returns it."""
    target, revision = split_revision(spec)
    local_dir = Path(local_dir)
    try:
        if not is_hub_target(target):
            source = f"{target.rstrip('/')}/{revision}"
            filesystem, path = fsspec.core.url_to_fs(source)
            if not filesystem.exists(path):
                raise FileNotFoundError(f"no checkpoint at {source}")
            write_directory_atomic(lambda staging: _get_safe_files(filesystem, path, staging, spec), local_dir)
        else:
            write_directory_atomic(
                lambda staging: _refuse_pickle_weights(snapshot_download(
                    target, revision=revision, local_dir=staging, endpoint=endpoint or os.environ.get("HF_ENDPOINT"),
                    token=token,
                ), spec),
                local_dir,
            )  # fmt: skip
            shutil.rmtree(local_dir / ".cache", ignore_errors=True)  # huggingface_hub's download metadata
    except (HfHubHTTPError, TransportError, OSError, ValueError) as error:
        raise HubError(f"pull of {target}@{revision} failed: {_cause(error)}") from error
    return require_checkpoint_dir(local_dir, f"checkpoint pulled from {spec}")


def require_checkpoint_dir(path: str | os.PathLike, what: str) -> Path:
    """A model directory (config.json) or a LoRA adapter directory (adapter_config.json)."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        return path
    return require_model_dir(path, what)


def _refuse_pickle_weights(folder: str | os.PathLike, spec: str) -> None:
    """ValueError (the pull fails, nothing is kept) when a pulled checkpoint carries pickle weight files."""
    pickled = pickle_weight_files(Path(folder))
    if pickled:
        raise ValueError(f"{spec} carries pickle weights ({', '.join(pickled)}), refused: {SAFETENSORS_HOWTO}")


def _get_safe_files(filesystem: Any, path: str, staging: Path, spec: str) -> None:
    filesystem.get(f"{path}/", str(staging), recursive=True)
    _refuse_pickle_weights(staging, spec)


def _copy_to_storage(folder: Path, target: str, revision: str, card: str) -> str:
    filesystem, root = fsspec.core.url_to_fs(target)
    destination = f"{root.rstrip('/')}/{revision}"
    staging = f"{root.rstrip('/')}/.{revision}.tmp"
    if filesystem.exists(staging):
        filesystem.rm(staging, recursive=True)
    filesystem.makedirs(staging, exist_ok=True)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            filesystem.put_file(str(path), f"{staging}/{path.relative_to(folder)}")
    with filesystem.open(f"{staging}/README.md", "w") as file:
        file.write(card)
    if filesystem.exists(destination):
        filesystem.rm(destination, recursive=True)
    filesystem.mv(staging, destination, recursive=True)
    return f"{target.rstrip('/')}/{revision}"


def _cause(error: Exception) -> str:
    """A one-line reason: the HTTP status and server message, or the connection problem."""
    response = getattr(error, "response", None)
    if response is not None and getattr(response, "status_code", None) == 401:
        return "401 Unauthorized: the token was refused (set HF_TOKEN or pass a valid token)"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
