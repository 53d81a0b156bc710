"""Prompt sets of the on-policy stages (rejection sampling, PPO) and of evaluation: the user's (a JSONL, JSON or
parquet file, a `datasets` save_to_disk folder or a Hub dataset), or the world's when asked for ("world").

A prompt record is `{"id", "prompt", "is_safety"}`: `prompt` is a list of messages ending with a user turn, or
a string (one user message); `id` defaults to the line number and `is_safety` to false. World records also
keep their gold answer `key` (a JSON string) so that the gold scorers can judge what the policy answered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .data.chat import DialogueError, surely_longer_than, validate_dialogue
from .generation import chat_prompt_texts
from .io import UnreadableRecord, looks_like_a_path, read_text_lines, table_records
from .sources import WORLD, announce_sources

PROMPTS_HELP = (
    "required: a JSONL file of {id, prompt, is_safety} records (or .json, .parquet, a save_to_disk folder, a Hub "
    "dataset name), or 'world' (the demo's prompts)"
)


def load_prompts(
    source: str, *, world_seed: int = 0, world_prompts: int = 200, world_prompt_seed: int = 0, split: str = "train"
) -> list[dict[str, Any]]:
    """Prompt records of `source`: a JSONL file (errors name its lines), a .json / .parquet file, a `datasets`
    save_to_disk folder or a Hub dataset name (records with the same fields; errors name the record), or "world"
    (`split` prompts of the synthetic world)."""
    if source == WORLD:
        from .world import World  # only the demo data needs the world

        world = World(seed=world_seed)
        return [p.to_record() for p in world.prompts(world_prompts, split, seed=world_prompt_seed)]
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".jsonl":
        rows = jsonl_lines(path)
    elif path.exists() or not looks_like_a_path(source):
        name, records = table_records(source, "prompts", split)
        rows = ((where, record if isinstance(record, dict) else UnreadableRecord("expected a JSON object"))
                for where, record in records)  # fmt: skip
    else:
        raise FileNotFoundError(f"prompts: no file at {path}")
    records, ids_at = [], {}
    for number, (where, record) in enumerate(rows, start=1):
        if isinstance(record, UnreadableRecord):
            raise ValueError(f"{path}: {where}: {record.reason}")
        default_id = where.removeprefix("line ") if where.startswith("line ") else str(number)  # JSONL: the line
        records.append(prompt_record(record, f"{path}: {where}", default_id, ids_at, where))
    if not records:
        raise ValueError(f"prompts {path}: the file has no prompts")
    return records


def jsonl_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """("line N", record) of each non-blank line of a JSONL prompt file (an `UnreadableRecord` for a bad one)."""
    for number, line in read_text_lines(path):
        if isinstance(line, UnreadableRecord):
            yield f"line {number}", line
        elif line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                yield f"line {number}", UnreadableRecord("not valid JSON")
                continue
            if not isinstance(record, dict):
                yield f"line {number}", UnreadableRecord(f"expected a JSON object, got {line[:60]}")
            else:
                yield f"line {number}", record


def prompt_record(record: dict, context: str, default_id: str, ids_at: dict[str, str], where: str) -> dict[str, Any]:
    """One checked prompt record (`{id, prompt, is_safety[, key]}`); ValueError starting with `context` (the file
    and line or record) naming the field. `ids_at` maps the ids seen so far to where they were."""
    prompt = record.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        prompt = [{"role": "user", "content": prompt}]
    try:
        validate_dialogue(prompt, where="field 'prompt'", need_answer=False)
    except DialogueError as error:
        raise ValueError(f"{context}: {error}") from None
    is_safety = record.get("is_safety", False)
    if not isinstance(is_safety, bool):
        raise ValueError(f"{context}: field 'is_safety': expected true or false, got {is_safety!r}")
    prompt_id = str(record.get("id", default_id))
    if prompt_id in ids_at:  # results are kept by id: a repeated one would overwrite the earlier prompt
        raise ValueError(f"{context}: field 'id': {prompt_id!r} is already the id of {ids_at[prompt_id]}")
    ids_at[prompt_id] = where
    return {"id": prompt_id, "prompt": prompt, "is_safety": is_safety,
            **({"key": record["key"]} if "key" in record else {})}  # fmt: skip


def stage_prompts(config: Any) -> list[dict[str, Any]]:
    """The prompts a stage config names with its `prompts`, `world_seed`, `world_prompts` and
    `world_prompt_seed` fields (rejection sampling and PPO share them), announced as the stage's data source."""
    # The stage's own config class, also when a recipe extends it (recipes' RecipeConfig).
    stage_class = next(c for c in type(config).__mro__ if c.__module__.startswith("align."))
    stage = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", stage_class.__name__.removesuffix("Config")).lower()
    announce_sources(stage, {"prompts": config.prompts}, config.world_seed)
    return load_prompts(
        config.prompts,
        world_seed=config.world_seed,
        world_prompts=config.world_prompts,
        world_prompt_seed=config.world_prompt_seed,
    )


def world_gold_scorer(records: list[dict[str, Any]]) -> Callable[[dict[str, Any], str], float] | None:
    """The world's gold reward of an answer to a prompt record, when every record is a world prompt (has its
    gold `key`); None for a user's prompts, which have no gold."""
    if not all("key" in record for record in records):
        return None
    from .world import WorldPrompt, gold_reward

    return lambda record, answer: gold_reward(WorldPrompt.from_record(record), answer)


def check_prompt_lengths(tokenizer: Any, records: list[dict[str, Any]], context: int, max_new_tokens: int) -> None:
    """ValueError naming the first prompt that leaves no room for `max_new_tokens` in the model's context."""
    limit = context - max_new_tokens
    for record in records:
        prompt = record["prompt"]
        contents = [prompt] if isinstance(prompt, str) else [str(m.get("content", "")) for m in prompt]
        if surely_longer_than(tokenizer, contents, limit):  # a huge prompt: refused before it is tokenized
            raise ValueError(
                f"prompt {record['id']}: {sum(map(len, contents))} characters, more tokens than the "
                f"{limit} that leave room for {max_new_tokens} new tokens in the context of {context}"
            )
        length = len(
            tokenizer(chat_prompt_texts(tokenizer, [record["prompt"]])[0], add_special_tokens=False).input_ids
        )
        if length > limit:
            raise ValueError(
                f"prompt {record['id']}: {length} tokens; with {max_new_tokens} new tokens it exceeds the "
                f"context of {context}"
            )
