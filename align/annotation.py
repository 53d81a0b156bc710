"""Comparison batches for human annotators: the data-collection step of a round on real data (docs/method.md §5, §8).

`write_annotation_batch` samples two answers of the latest policy per prompt, as the paper does (two sampling
temperatures; Llama 2 §3.2.1 samples "from two different model variants, and varying the temperature"), shows
them in random order as `response_a` / `response_b`, and writes one JSONL record per prompt with empty fields
for the annotator:

    {"id", "prompt": [...], "is_safety", "response_a", "response_b",
     "choice": null,        # "a" or "b": the better response (leave null to skip the record)
     "strength": null,      # significantly_better | better | slightly_better | negligibly_better | unsure
     "a_is_safe": null,     # true / false (safety prompts; optional elsewhere)
     "b_is_safe": null,
     "meta": {...}}         # how each response was sampled (not shown to annotators)

`read_annotations` turns a labelled batch into preference pairs (TRL conversational format with `strength`
and `is_safety`, what `align.data.load_preferences` reads): pairs on helpfulness prompts become helpfulness
pairs, pairs on safety prompts safety pairs, except those whose chosen response is marked unsafe and the
rejected one safe (the paper leaves those out of the safety data, §3.2.1). Unlabelled records are skipped and
counted; a malformed one is an error naming the file, line and field.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data.preferences import STRENGTHS
from .generation import chat_prompt_texts, complete, sample_seeds
from .io import atomic_write_jsonl, read_jsonl

logger = logging.getLogger(__name__)

ANNOTATION_FIELDS = ("choice", "strength", "a_is_safe", "b_is_safe")
# The paper's safety question (§3.2.1): its three answers, as (preferred answer safe, other answer safe).
SAFETY_ANSWERS = {"preferred_only": (True, False), "both_safe": (True, True), "both_unsafe": (False, False)}


def safety_labels(choice: str, answer: str | None) -> dict[str, bool | None]:
    """`a_is_safe` / `b_is_safe` of a batch record from the choice and an answer to the safety question
    (None: not answered, both unknown)."""
    preferred_safe, other_safe = SAFETY_ANSWERS[answer] if answer is not None else (None, None)
    other = "b" if choice == "a" else "a"
    return {f"{choice}_is_safe": preferred_safe, f"{other}_is_safe": other_safe}


class AnnotationError(ValueError):
    """A labelled batch that cannot be read; the message names the file, line and field."""


def write_annotation_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    temperatures: tuple[float, float] = (1.0, 0.7),
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 32,
) -> int:
    """Write the comparison batch of `prompts` (records `{id, prompt, is_safety}`) to `path`; returns its size.
    Prompts whose two answers are identical or empty are left out (nothing to compare)."""
    texts = chat_prompt_texts(tokenizer, [record["prompt"] for record in prompts])
    samples = []
    for index, temperature in enumerate(temperatures):
        # Each answer from its own seed (of the batch seed, the prompt's id and which of the two it is).
        row_seeds = [sample_seeds(seed, record["id"], len(temperatures))[index] for record in prompts]
        samples.append(
            complete(model, tokenizer, texts, max_new_tokens=max_new_tokens, temperature=temperature,
                     batch_size=batch_size, row_seeds=row_seeds)
        )  # fmt: skip
    order = random.Random(seed)
    records = []
    for record, first, second in zip(prompts, *samples):
        if not first.strip() or not second.strip() or first.strip() == second.strip():
            continue
        answers = [(first, f"temperature {temperatures[0]}"), (second, f"temperature {temperatures[1]}")]
        order.shuffle(answers)
        records.append(
            {
                "id": record["id"],
                "prompt": record["prompt"],
                "is_safety": bool(record.get("is_safety", False)),
                "response_a": answers[0][0],
                "response_b": answers[1][0],
                **{field: None for field in ANNOTATION_FIELDS},
                "meta": {"a": answers[0][1], "b": answers[1][1]},
            }
        )
    atomic_write_jsonl(path, records)
    return len(records)


SAFETY_WORDS = {"true": True, "safe": True, "yes": True, "false": False, "unsafe": False, "no": False}


def _label(record: dict[str, Any], field: str, allowed: Sequence[Any], where: str) -> Any:
    value = record.get(field)
    if isinstance(value, str):
        value = value.strip().lower().replace("-", "_").replace(" ", "_") or None
        if value in SAFETY_WORDS and True in allowed:
            value = SAFETY_WORDS[value]
    if value is not None and value not in allowed:
        raise AnnotationError(f"{where}: field {field!r}: expected one of {list(allowed)}, got {record.get(field)!r}")
    return value


def read_annotations(path: str | Path, source: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The preference pairs of a labelled batch, by target ("helpfulness", "safety"); see the module docstring."""
    path = Path(path)
    pairs: dict[str, list[dict[str, Any]]] = {"helpfulness": [], "safety": []}
    skipped: Counter[str] = Counter()
    for number, record in enumerate(read_jsonl(path), start=1):
        where = f"{path}: line {number}"
        missing = [field for field in ("prompt", "response_a", "response_b") if not record.get(field)]
        if missing:
            raise AnnotationError(f"{where}: field {missing[0]!r}: missing")
        choice = _label(record, "choice", ("a", "b"), where)
        if choice is None:
            skipped["no choice"] += 1
            continue
        strength = _label(record, "strength", STRENGTHS, where) or "unsure"
        safe = {side: _label(record, f"{side}_is_safe", (True, False), where) for side in ("a", "b")}
        other = "b" if choice == "a" else "a"
        is_safety = bool(record.get("is_safety", False))
        if is_safety and safe[choice] is False and safe[other] is True:
            skipped["chosen unsafe, rejected safe"] += 1
            continue
        pairs["safety" if is_safety else "helpfulness"].append(
            {
                "prompt": record["prompt"],
                "chosen": [{"role": "assistant", "content": record[f"response_{choice}"]}],
                "rejected": [{"role": "assistant", "content": record[f"response_{other}"]}],
                "strength": strength,
                "is_safety": is_safety,
                "source": source or str(path),
            }
        )
    if skipped:
        logger.warning("%s: skipped %s", path, ", ".join(f"{n} x {reason}" for reason, n in skipped.items()))
    return pairs
