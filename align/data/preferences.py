"""Preference pairs from the public formats, as one `datasets.Dataset` every reward-model stage reads.

`load_preferences(source, format="auto", target=...)` returns TRL's conversational preference format plus the
Llama 2 annotations (docs/method.md §5):

    prompt     list of messages, ending with a user turn (an optional system message first)
    chosen     [{"role": "assistant", "content": ...}]
    rejected   [{"role": "assistant", "content": ...}]
    strength   "significantly_better" | "better" | "slightly_better" | "negligibly_better" | "unsure"
    is_safety  bool: the prompt is a safety prompt (gates the reward in PPO, picks the safety RM's data)
    margin     float: the data's own `margin` where a record has one, else the margin of its strength under
               `margin_scheme` (the paper's Table 28; "small" by default, so 0 for "unsure"), ready for TRL's
               `RewardTrainer`. `margin_scheme=None` keeps only the data's own margins (None elsewhere), for pairs
               that are saved and re-read by a stage with its own scheme
    source     where the record came from (its own `source` field, else the file or dataset name)

`format="auto"` (the default) tells the public formats apart by the fields of the first record
(`detect_format`): `response_0`/`response_1` -> "pku-saferlhf"; `score_chosen` -> "ultrafeedback"; `chosen` /
`rejected` transcripts starting with "Human:" -> "hh-rlhf"; other `chosen` / `rejected` -> "trl". A record that
fails to parse under an explicit format names the format it looks like.

Choices where the formats are silent (documented in the README too):
- no strength label -> "unsure" (margin 0: the plain ranking loss); no safety tag -> False unless `is_safety=`
  is given to the loader (e.g. True for HH-RLHF's harmless subsets);
- "ultrafeedback": strength from the gap of the 1-10 scores: >= 3 significantly better, >= 2 better, >= 1
  slightly better, > 0 negligibly better, 0 unsure; a negative gap is an error;
- "pku-saferlhf" with target="safety": a safe response over an unsafe one is "significantly_better", any other
  pair "unsure" (the data set has no strength labels; safe vs unsafe is the clear-cut case of the paper).

A record that does not parse raises `PreferenceDataError` naming the source, the record (index and, for
JSONL, line) and the field. With `on_error="skip"` it is skipped instead and counted by reason in a logged
summary; nothing vanishes silently.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import datasets

from ..io import UnreadableRecord, table_records
from .chat import DialogueError, Message, validate_dialogue

logger = logging.getLogger(__name__)

STRENGTHS = ("significantly_better", "better", "slightly_better", "negligibly_better", "unsure")
FORMATS = ("auto", "trl", "hh-rlhf", "pku-saferlhf", "ultrafeedback")
TARGETS = ("helpfulness", "safety")
COLUMNS = ("prompt", "chosen", "rejected", "strength", "is_safety", "margin", "source")

# Llama 2 paper, Table 28 (docs/method.md §5): margin by annotator strength, for the "small" and "large" schemes.
MARGINS: dict[str, dict[str, float]] = {
    "none": {strength: 0.0 for strength in STRENGTHS},
    "small": {
        "significantly_better": 1.0,
        "better": 2 / 3,
        "slightly_better": 1 / 3,
        "negligibly_better": 0.0,
        "unsure": 0.0,
    },
    "large": {
        "significantly_better": 3.0,
        "better": 2.0,
        "slightly_better": 1.0,
        "negligibly_better": 0.0,
        "unsure": 0.0,
    },
}


def margin_for_strength(strength: str, scheme: str = "small") -> float:
    """The margin m(strength) of the ranking loss for a margin scheme ("none", "small" or "large")."""
    if scheme not in MARGINS:
        raise ValueError(f"scheme: unknown margin scheme {scheme!r}, expected one of {list(MARGINS)}")
    if strength not in MARGINS[scheme]:
        raise ValueError(f"strength: unknown strength {strength!r}, expected one of {list(STRENGTHS)}")
    return MARGINS[scheme][strength]


# Score gaps (UltraFeedback's 1-10 scale) at which each strength starts, strongest first.
ULTRAFEEDBACK_GAPS = (("significantly_better", 3.0), ("better", 2.0), ("slightly_better", 1.0))


class PreferenceDataError(ValueError):
    """A preference record that cannot be used; the message names source, record and field."""


class _BadRecord(Exception):
    """Raised inside a record parser with the field and the reason; the loader adds where it happened."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"field {field!r}: {reason}")
        self.field, self.reason = field, reason


def normalize_strength(value: Any) -> str:
    """Map a strength label ("Significantly better", "slightly-better", ...) onto `STRENGTHS`."""
    if value is None:
        return "unsure"
    label = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if label not in STRENGTHS:
        raise _BadRecord("strength", f"unknown strength {value!r}, expected one of {list(STRENGTHS)}")
    return label


def _text(record: dict, field: str) -> str:
    value = record.get(field)
    if value is None:
        raise _BadRecord(field, "missing")
    if not isinstance(value, str) or not value.strip():
        raise _BadRecord(field, "empty response" if isinstance(value, str) else f"expected text, got {value!r:.60}")
    return value


def _as_messages(value: Any, field: str, role: str) -> list[Message]:
    """A string becomes one message with `role`; a message list is checked and returned."""
    if isinstance(value, str):
        if not value.strip():
            raise _BadRecord(field, "empty response" if role == "assistant" else "empty prompt")
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise _BadRecord(field, f"expected a string or a list of {{role, content}} messages, got {value!r:.60}")


def _answers(record: dict) -> tuple[list[Message], list[Message]]:
    """The required `chosen` and `rejected` fields as message lists (a string is one assistant message)."""
    for field in ("chosen", "rejected"):
        if record.get(field) is None:
            raise _BadRecord(field, "missing")
    return _as_messages(record["chosen"], "chosen", "assistant"), _as_messages(
        record["rejected"], "rejected", "assistant"
    )


def _split_shared_prompt(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], Message, Message]:
    """Full conversations that share all but their last (assistant) message -> prompt, chosen, rejected."""
    if chosen[:-1] != rejected[:-1]:
        raise _BadRecord("rejected", "chosen and rejected conversations differ before their last message")
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise _BadRecord("chosen", "the last message of each conversation must be the assistant's answer")
    return chosen[:-1], chosen[-1], rejected[-1]


def _pair(prompt: list[Message], chosen: Message, rejected: Message, **annotations: Any) -> dict[str, Any]:
    try:
        validate_dialogue(prompt, where="prompt", need_answer=False)
    except DialogueError as error:
        raise _BadRecord("prompt", str(error)) from None
    for field, answer in (("chosen", chosen), ("rejected", rejected)):
        if answer["role"] != "assistant":
            raise _BadRecord(field, f"expected an assistant message, got role {answer['role']!r}")
        if not isinstance(answer["content"], str) or not answer["content"].strip():
            raise _BadRecord(field, "empty response")
    if chosen["content"].strip() == rejected["content"].strip():
        raise _BadRecord("rejected", "identical to chosen")
    return {"prompt": prompt, "chosen": [chosen], "rejected": [rejected], **annotations}


def _margin(record: dict) -> float | None:
    value = record.get("margin")
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _BadRecord("margin", f"expected a number, got {value!r}") from None


def _flag(record: dict, field: str) -> bool:
    """A true/false field (absent: false); the string "false" is not true."""
    value = record.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _BadRecord(field, f"expected true or false, got {value!r}")
    return value


def parse_trl(record: dict, target: str) -> dict[str, Any]:
    """TRL preference format: standard (strings), conversational (messages), with or without `prompt`."""
    chosen, rejected = _answers(record)
    if record.get("prompt") is not None:
        prompt = _as_messages(record["prompt"], "prompt", "user")
        if len(chosen) != 1 or len(rejected) != 1:
            raise _BadRecord("chosen", "with a separate prompt, chosen and rejected must be one assistant message")
        chosen_message, rejected_message = chosen[0], rejected[0]
    else:  # implicit prompt: full conversations sharing a prefix
        prompt, chosen_message, rejected_message = _split_shared_prompt(chosen, rejected)
    return _pair(
        prompt,
        chosen_message,
        rejected_message,
        strength=normalize_strength(record.get("strength")),
        is_safety=_flag(record, "is_safety"),
        margin=_margin(record),
    )


def parse_hh_transcript(text: str, field: str) -> list[Message]:
    """Split an Anthropic HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") into messages."""
    roles = {"Human": "user", "Assistant": "assistant"}
    messages: list[Message] = []
    for chunk in text.split("\n\n"):
        speaker, colon, content = chunk.partition(":")
        if colon and speaker in roles:
            messages.append({"role": roles[speaker], "content": content.strip()})
        elif messages:  # a paragraph break inside a turn
            messages[-1]["content"] += "\n\n" + chunk
        elif chunk.strip():
            raise _BadRecord(field, f"transcript must start with 'Human:' or 'Assistant:', got {chunk[:40]!r}")
    if not messages:
        raise _BadRecord(field, "empty transcript")
    return messages


def parse_hh_rlhf(record: dict, target: str) -> dict[str, Any]:
    """Anthropic HH-RLHF: `chosen` / `rejected` full transcripts; the shared turns become the prompt."""
    chosen = parse_hh_transcript(_text(record, "chosen"), "chosen")
    rejected = parse_hh_transcript(_text(record, "rejected"), "rejected")
    prompt, chosen_message, rejected_message = _split_shared_prompt(chosen, rejected)
    return _pair(prompt, chosen_message, rejected_message, strength="unsure", is_safety=False, margin=None)


def parse_pku_saferlhf(record: dict, target: str) -> dict[str, Any]:
    """PKU-SafeRLHF: two responses, the better and the safer one's ids, and a safety flag per response."""
    prompt = _text(record, "prompt")
    responses = [_text(record, "response_0"), _text(record, "response_1")]
    safe = []
    for field in ("is_response_0_safe", "is_response_1_safe"):
        if not isinstance(record.get(field), bool):
            raise _BadRecord(field, f"expected true/false, got {record.get(field)!r}")
        safe.append(record[field])
    id_field = "better_response_id" if target == "helpfulness" else "safer_response_id"
    best = record.get(id_field)
    if best not in (0, 1):
        raise _BadRecord(id_field, f"expected 0 or 1, got {best!r}")
    strength = "significantly_better" if target == "safety" and safe[best] and not safe[1 - best] else "unsure"
    return _pair(
        [{"role": "user", "content": prompt}],
        {"role": "assistant", "content": responses[best]},
        {"role": "assistant", "content": responses[1 - best]},
        strength=strength,
        is_safety=not all(safe),
        margin=None,
    )


def strength_from_score_gap(gap: float) -> str:
    """UltraFeedback's score gap (1-10 scale) -> strength; thresholds in `ULTRAFEEDBACK_GAPS`."""
    for strength, threshold in ULTRAFEEDBACK_GAPS:
        if gap >= threshold:
            return strength
    return "negligibly_better" if gap > 0 else "unsure"


def parse_ultrafeedback(record: dict, target: str) -> dict[str, Any]:
    """UltraFeedback binarized: `chosen` / `rejected` conversations and their 1-10 scores."""
    chosen, rejected = _answers(record)
    if len(chosen) == 1 and record.get("prompt"):  # answers given alone
        prompt, chosen_message, rejected_message = (
            _as_messages(record["prompt"], "prompt", "user"),
            chosen[0],
            rejected[0],
        )
    else:
        prompt, chosen_message, rejected_message = _split_shared_prompt(chosen, rejected)
    scores = []
    for field in ("score_chosen", "score_rejected"):
        if not isinstance(record.get(field), (int, float)) or isinstance(record.get(field), bool):
            raise _BadRecord(field, f"expected a number, got {record.get(field)!r}")
        scores.append(float(record[field]))
    gap = scores[0] - scores[1]
    if gap < 0:
        raise _BadRecord("score_chosen", f"chosen scored lower than rejected ({scores[0]} < {scores[1]})")
    return _pair(
        prompt, chosen_message, rejected_message, strength=strength_from_score_gap(gap), is_safety=False, margin=None
    )


PARSERS: dict[str, Callable[[dict, str], dict[str, Any]]] = {
    "trl": parse_trl,
    "hh-rlhf": parse_hh_rlhf,
    "pku-saferlhf": parse_pku_saferlhf,
    "ultrafeedback": parse_ultrafeedback,
}


def detect_format(record: Any) -> str | None:
    """The public format a record looks like (module docstring), or None."""
    if not isinstance(record, dict):
        return None
    if {"response_0", "response_1"} <= record.keys():
        return "pku-saferlhf"
    if {"chosen", "rejected"} <= record.keys():
        if "score_chosen" in record:
            return "ultrafeedback"
        chosen = record["chosen"]
        if isinstance(chosen, str) and chosen.lstrip().startswith("Human:") and record.get("prompt") is None:
            return "hh-rlhf"
        return "trl"
    return None


def _records(source: Any, split: str, option: str) -> tuple[str, Iterator[tuple[str, Any]]]:
    """(name of the source, iterator of (where, record)); `where` is "record 3 (line 4)" or "record 3"."""
    if isinstance(source, datasets.Dataset):
        return "<Dataset>", ((f"record {i}", row) for i, row in enumerate(source))
    if isinstance(source, list):
        return "<list>", ((f"record {i}", row) for i, row in enumerate(source))
    try:
        return table_records(str(source), option, split)
    except FileNotFoundError:
        raise
    except ValueError as error:  # a file that is not a table of records, a dataset that does not load
        raise PreferenceDataError(str(error)) from None


def _parses(record: dict, format: str, target: str) -> bool:
    """Whether `record` is a valid record of `format` (a hint to switch formats must lead somewhere)."""
    try:
        PARSERS[format](record, target)
    except _BadRecord:
        return False
    return True


def load_preferences(
    source: str | os.PathLike | datasets.Dataset | list[dict],
    format: str = "auto",
    target: str = "helpfulness",
    *,
    on_error: str = "raise",
    is_safety: bool | None = None,
    split: str = "train",
    margin_scheme: str | None = "small",
    option: str = "preferences",
) -> datasets.Dataset:
    """Load preference pairs from a local file (.jsonl/.json/.parquet), a save_to_disk folder, a `datasets` name,
    a Dataset or a list.

    `format`: one of `FORMATS` ("auto": detected from the first record); `target`: "helpfulness" or "safety" (PKU-SafeRLHF picks the better or the safer
    response by it); `on_error`: "raise" (default) or "skip"; `is_safety`: tag every record (overrides the data);
    `margin_scheme`: how a pair without its own margin gets one ("none", "small", "large" or None); `option`:
    the setting that named the source, for a missing file or a dataset that does not load. Columns and choices are described in the module docstring.
    """
    if format not in FORMATS:
        raise ValueError(f"format: unknown preference format {format!r}, expected one of {list(FORMATS)}")
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {list(TARGETS)}, got {target!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
    if margin_scheme is not None and margin_scheme not in MARGINS:
        raise ValueError(f"margin_scheme: expected one of {list(MARGINS)} or None, got {margin_scheme!r}")
    name, records = _records(source, split, option)
    parse = PARSERS.get(format)
    rows, skipped = [], Counter()
    for where, record in records:
        if isinstance(record, UnreadableRecord):
            if on_error == "raise":
                raise PreferenceDataError(f"{name}: {where}: {record.reason}")
            skipped[record.reason.split(" (")[0]] += 1
            continue
        if parse is None:  # format="auto": the first readable record decides
            detected = detect_format(record)
            if detected is None:
                fields = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise PreferenceDataError(
                    f"{name}: {where}: cannot tell its preference format from its fields {fields}; expected "
                    f"one of {list(PARSERS)} (chosen/rejected, response_0/response_1, ...)"
                )
            format, parse = detected, PARSERS[detected]
            logger.info("%s: %s preference format (detected)", name, detected)
        try:
            if not isinstance(record, dict):
                raise _BadRecord("<record>", f"expected a JSON object, got {type(record).__name__}")
            row = parse(record, target)
        except _BadRecord as bad:
            if on_error == "raise":
                looks_like = detect_format(record)
                hint = (
                    f" (the record looks like {looks_like!r} data, not {format!r}: set its format to "
                    f"{looks_like!r} or 'auto')"
                    if looks_like not in (None, format) and _parses(record, looks_like, target)
                    else ""
                )
                raise PreferenceDataError(f"{name}: {where}: {bad}{hint}") from None
            skipped[f"{bad.field}: {bad.reason.split(',')[0]}"] += 1
            continue
        if is_safety is not None:
            row["is_safety"] = is_safety
        if row["margin"] is None and margin_scheme is not None:
            row["margin"] = margin_for_strength(row["strength"], margin_scheme)
        row["source"] = str(record.get("source") or name)
        rows.append(row)
    if skipped:
        summary = ", ".join(f"{count} x {reason}" for reason, count in skipped.most_common())
        logger.warning(
            "%s: skipped %d of %d records (%s)",
            name,
            sum(skipped.values()),
            len(rows) + sum(skipped.values()),
            summary,
        )
    if not rows:
        raise PreferenceDataError(
            f"{name}: no usable preference records" + (f" ({sum(skipped.values())} skipped)" if skipped else "")
        )
    return datasets.Dataset.from_list([{column: row[column] for column in COLUMNS} for row in rows])
