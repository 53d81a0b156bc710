"""AI feedback: a round's comparison batch labelled by a model when there are no annotators (docs/method.md §5).

The labels are the human protocol's (which answer is better, how much, the safety of the two), so that the
round reads a judged batch exactly as a human one (`align.annotation.read_annotations`). Two annotators:

- `JudgeAnnotator` ("judge:<dir>"): a chat model asked the paper's questions in a prompt from a template file
  the user can edit (`judge_prompt.txt` by default; placeholders {conversation}, {answer_a}, {answer_b}), its
  greedy answer parsed into choice, strength and safety. It is asked twice, with the answers swapped the second
  time; a verdict that follows the position rather than the answer ("inconsistent") or an answer that cannot be
  parsed leaves that comparison unlabelled and is counted by reason; nothing is ever filled in by default.
- `RewardModelAnnotator` ("rm:<dir>"): a reward model (scored with its own tokenizer) picks the answer it scores
  higher; the strength comes from the gap of the two scores (`STRENGTH_GAPS`, on the logit scale), and on
  safety prompts an answer counts as safe when sigmoid(score) >= `safe_above`, which fits a safety reward
  model; a helpfulness one says little about safety.

`annotate_batch` labels a batch file with either and writes the labelled copy the round reads, each record
naming its annotator (`"annotator": "judge:<dir>"`), and returns the counts the manifest and report show.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .annotation import safety_labels
from .io import atomic_write_jsonl, read_jsonl

HUMAN = "human"
DEFAULT_JUDGE_TEMPLATE = Path(__file__).parent / "templates" / "judge_prompt.txt"
# Gap between the two answers' reward-model scores (logits) -> the paper's strength of the preference.
STRENGTH_GAPS = (("significantly_better", 2.0), ("better", 1.0), ("slightly_better", 0.4))

_CHOICE = re.compile(r"better\s+answer\s*:\s*\**\s*([AB])\b", re.IGNORECASE)
_STRENGTH = re.compile(
    r"how\s+much\s+better\s*:\s*\**\s*(significantly better|slightly better|negligibly better|better|unsure)",
    re.IGNORECASE,
)
# The judge's words for the paper's three safety answers (`align.annotation.SAFETY_ANSWERS`).
JUDGE_SAFETY_ANSWERS = {"only the better answer is safe": "preferred_only",
                        "only the preferred answer is safe": "preferred_only", "both safe": "both_safe",
                        "both unsafe": "both_unsafe"}  # fmt: skip
_SAFETY = re.compile(r"safety\s*:\s*\**\s*(" + "|".join(map(re.escape, JUDGE_SAFETY_ANSWERS)) + ")", re.IGNORECASE)


TARGETS = ("helpfulness", "safety")
ANNOTATOR_HELP_FORMS = ("'human', 'judge:<chat model dir>' or 'rm:<reward model dir>', or one per data set: "
                        "'rm:helpfulness=<dir>,safety=<dir>'")  # fmt: skip


def parse_annotator(value: str) -> tuple[str, dict[str, str] | None]:
    """("human", None), or ("judge" | "rm", {target: dir}) from an `annotator` option: one model for both data
    sets ("rm:<dir>") or one per data set ("rm:helpfulness=<dir>,safety=<dir>": the helpfulness comparisons are
    labelled by the first, the safety ones by the second); ValueError otherwise."""
    if value == HUMAN:
        return HUMAN, None
    kind, _, rest = value.partition(":")
    if kind not in ("judge", "rm") or not rest:
        raise ValueError(f"annotator: expected {ANNOTATOR_HELP_FORMS}, got {value!r}")
    if not re.match(r"^(helpfulness|safety)=", rest):
        return kind, dict.fromkeys(TARGETS, rest)
    judges = {}
    for part in rest.split(","):
        target, _, path = part.partition("=")
        if target not in TARGETS or not path or target in judges:
            raise ValueError(
                f"annotator: {part!r}: expected helpfulness=<dir> and safety=<dir> once each, got {value!r}"
            )
        judges[target] = path
    if set(judges) != set(TARGETS):
        missing = next(t for t in TARGETS if t not in judges)
        raise ValueError(f"annotator: {value!r} names no judge for {missing}; give one per data set")
    return kind, judges


def parse_judge_answer(text: str, is_safety: bool) -> dict[str, Any] | str:
    """The labels in a judge's answer, or why there are none ("no choice", "no strength", "no safety")."""
    choice, strength, safety = _CHOICE.search(text), _STRENGTH.search(text), _SAFETY.search(text)
    if choice is None:
        return "no choice"
    if strength is None:
        return "no strength"
    if is_safety and safety is None:
        return "no safety"
    picked = choice.group(1).lower()
    label = {"choice": picked, "strength": strength.group(1).lower().replace(" ", "_")}
    if safety is not None:
        label.update(safety_labels(picked, JUDGE_SAFETY_ANSWERS[safety.group(1).lower()]))
    return label


def conversation_text(prompt: Sequence[dict[str, str]]) -> str:
    return "\n".join(f"{turn['role'].capitalize()}: {turn['content']}" for turn in prompt)


class JudgeAnnotator:
    """A chat model answering the paper's questions about two answers (module docstring)."""

    def __init__(self, model_dir: str | Path, template: str | Path | None = None, max_new_tokens: int = 48,
                 device: str | torch.device = "cpu", batch_size: int = 16) -> None:  # fmt: skip
        from .checkpoint import require_model_dir
        from .data import load_tokenizer
        from .io import read_text
        from .modeling import load_causal_lm

        path = require_model_dir(model_dir, "annotator judge")
        self.name = f"judge:{model_dir}"
        self.template = read_text(Path(template or DEFAULT_JUDGE_TEMPLATE))
        for placeholder in ("{conversation}", "{answer_a}", "{answer_b}"):
            if placeholder not in self.template:
                raise ValueError(
                    f"annotator judge template {template or DEFAULT_JUDGE_TEMPLATE}: {placeholder} missing"
                )
        self.tokenizer = load_tokenizer(path)
        self.model = load_causal_lm(path, "annotator judge").to(device).eval()
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def question(self, record: dict[str, Any]) -> list[dict[str, str]]:
        text = (self.template.replace("{conversation}", conversation_text(record["prompt"]))
                .replace("{answer_a}", record["response_a"]).replace("{answer_b}", record["response_b"]))  # fmt: skip
        return [{"role": "user", "content": text}]

    def answers(self, records: Sequence[dict[str, Any]]) -> list[str]:
        """The judge's greedy answer to each record's question."""
        from .generation import chat_prompt_texts, complete

        texts = chat_prompt_texts(self.tokenizer, [self.question(record) for record in records])
        return complete(self.model, self.tokenizer, texts, max_new_tokens=self.max_new_tokens,
                        batch_size=self.batch_size)  # fmt: skip

    def label(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each record's labels and the judge's answers, or `{"unparsable": why, "judge_answer": ...}`.

        The judge is asked twice, the second time with the two answers swapped: a judge that prefers a position
        rather than an answer (a known bias of model judges) would otherwise decide the batch by the random order
        of A and B. When the two verdicts pick different answers the comparison is left unlabelled
        ("inconsistent"); when both parse and agree, the first one's labels are kept."""
        swapped = [{**r, "response_a": r["response_b"], "response_b": r["response_a"]} for r in records]
        labels = []
        for record, first, second in zip(records, self.answers(records), self.answers(swapped)):
            is_safety = bool(record.get("is_safety"))
            verdict, check = parse_judge_answer(first, is_safety), parse_judge_answer(second, is_safety)
            answers = {"judge_answer": first, "judge_answer_swapped": second}
            if isinstance(verdict, str) or isinstance(check, str):
                labels.append({"unparsable": verdict if isinstance(verdict, str) else check, **answers})
            elif verdict["choice"] == check["choice"]:  # the same position both times: two different answers
                labels.append({"unparsable": "inconsistent", **answers})
            else:
                labels.append({**verdict, **answers})
        return labels


class RewardModelAnnotator:
    """A reward model's preference between two answers (module docstring)."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu", batch_size: int = 32,
                 safe_above: float = 0.5) -> None:  # fmt: skip
        from .reward_sources import RewardModelSource

        self.name = f"rm:{model_dir}"
        self.source = RewardModelSource(model_dir, device, batch_size, name="annotator")
        self.safe_above = safe_above

    def label(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each record's labels, with the two scores they come from."""
        prompts = [record["prompt"] for record in records]
        scores = {side: self.source(prompts, [r[f"response_{side}"] for r in records]).tolist() for side in "ab"}
        labels = []
        for index, record in enumerate(records):
            a, b = scores["a"][index], scores["b"][index]
            gap = abs(a - b)
            label = {
                "choice": "a" if a >= b else "b",
                "strength": next((name for name, least in STRENGTH_GAPS if gap >= least), "negligibly_better"),
                "scores": {"a": a, "b": b},
            }
            if record.get("is_safety"):
                for side, value in (("a", a), ("b", b)):
                    label[f"{side}_is_safe"] = 1 / (1 + math.exp(-value)) >= self.safe_above
            labels.append(label)
        return labels


class PerTargetAnnotator:
    """One annotator per data set: a comparison of a safety prompt is labelled by the safety judge, the others by
    the helpfulness judge; each label names the judge that gave it."""

    def __init__(self, annotators: dict[str, Any]) -> None:
        self.annotators = annotators
        self.name = ",".join(f"{target}={annotators[target].name}" for target in TARGETS)

    def label(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        labels: list[dict[str, Any] | None] = [None] * len(records)
        for target, annotator in self.annotators.items():
            mine = [i for i, r in enumerate(records) if bool(r.get("is_safety")) == (target == "safety")]
            for i, label in zip(mine, annotator.label([records[i] for i in mine]) if mine else []):
                labels[i] = {**label, "annotator": f"{annotator.name} ({target})"}
        return labels  # type: ignore[return-value]


def load_annotator(value: str, device: str | torch.device = "cpu", template: str | None = None) -> Any:
    """The AI annotator an `annotator` option names ("judge:<dir>", "rm:<dir>", or one per data set)."""
    kind, judges = parse_annotator(value)
    if judges is None:
        raise ValueError(f"annotator: {value!r} is a person; the page (`align annotate`) is theirs")

    def load(path: str) -> Any:
        return (
            JudgeAnnotator(path, template, device=device)
            if kind == "judge"
            else RewardModelAnnotator(path, device=device)
        )

    if judges["helpfulness"] == judges["safety"]:
        return load(judges["helpfulness"])
    return PerTargetAnnotator({target: load(path) for target, path in judges.items()})


def annotate_batch(batch_path: str | Path, out_path: str | Path, annotator: Any) -> dict[str, Any]:
    """Label every comparison of `batch_path` with `annotator`, write the labelled copy to `out_path`
    atomically; returns {"annotated_by", "labelled", "unparsable": {reason: count}}."""
    records = read_jsonl(batch_path)
    labels = annotator.label(records)
    unparsable: Counter[str] = Counter()
    written = []
    for record, label in zip(records, labels):
        if "unparsable" in label:  # left unlabelled (choice null): the round skips it and counts it
            unparsable[label["unparsable"]] += 1
        written.append({**record, "annotator": annotator.name, **label})  # a per-target label names its judge
    atomic_write_jsonl(out_path, written)
    return {"annotated_by": annotator.name, "labelled": len(records) - sum(unparsable.values()),
            "unparsable": dict(unparsable)}  # fmt: skip
