"""Ghost Attention (GAtt) training dialogues (docs/method.md §4; Llama 2 paper §3.3).

Given the user turns of a dialogue and a system instruction `inst` (act as a character, answer in a style,
only talk about a topic, or a combination):

1. sample every assistant turn from the latest chat model with `inst` attached to *every* user message, so
   that each answer follows the instruction;
2. for training, keep `inst` only once: as the system prompt (default) or in the first user message;
3. train on the last assistant answer only; every earlier token, answers included, is masked.

The sampler is any callable that maps a message list (ending with a user turn) to an answer string: a chat
model wrapped by `align.generation`, or the synthetic world's scripted assistant, plug in alike.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .chat import Message, tokenize_dialogue

AssistantSampler = Callable[[list[Message]], str]

# Instruction kinds of the paper's synthetic constraints (§3.3): hobbies / language / public figure; ours are
# characters, styles and topics, combinable. Values are examples; pass your own lists to `sample_instruction`.
INSTRUCTION_TEMPLATES: dict[str, str] = {
    "character": "Act as {value}.",
    "style": "Always answer {value}.",
    "topic": "Only talk about {value}.",
}
DEFAULT_VALUES: dict[str, list[str]] = {
    "character": ["a pirate", "a librarian", "a chess coach", "a ship's cook"],
    "style": ["in one sentence", "in capital letters", "with a list", "politely and briefly"],
    "topic": ["the weather", "numbers", "animals", "the sea"],
}


@dataclass(frozen=True)
class GattInstruction:
    """A system instruction made of one or more constraints, e.g. {"character": "a pirate", "style": ...}."""

    constraints: tuple[tuple[str, str], ...]

    @property
    def text(self) -> str:
        return " ".join(INSTRUCTION_TEMPLATES[kind].format(value=value) for kind, value in self.constraints)


def sample_instruction(
    rng: random.Random, values: dict[str, Sequence[str]] | None = None, max_constraints: int = 2
) -> GattInstruction:
    """Draw 1..`max_constraints` constraints of distinct kinds (the paper combines them too)."""
    values = values or DEFAULT_VALUES
    unknown = set(values) - set(INSTRUCTION_TEMPLATES)
    if unknown:
        raise ValueError(
            f"values: unknown instruction kinds {sorted(unknown)}, expected {list(INSTRUCTION_TEMPLATES)}"
        )
    kinds = rng.sample(sorted(values), k=rng.randint(1, min(max_constraints, len(values))))
    return GattInstruction(tuple((kind, rng.choice(list(values[kind]))) for kind in kinds))


def build_gatt_dialogue(
    user_messages: Sequence[str],
    instruction: GattInstruction | str,
    sample_assistant: AssistantSampler,
    *,
    instruction_as_system: bool = True,
) -> list[Message]:
    """A GAtt training dialogue: answers sampled with the instruction on every turn, kept only at the start."""
    if not user_messages:
        raise ValueError("user_messages: a GAtt dialogue needs at least one user turn")
    text = instruction.text if isinstance(instruction, GattInstruction) else instruction
    if not text.strip():
        raise ValueError("instruction: empty")
    augmented: list[Message] = []  # step 1: what the sampler sees
    answers: list[str] = []
    for user in user_messages:
        augmented.append({"role": "user", "content": f"{text}\n\n{user}"})
        answer = sample_assistant(list(augmented))
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"sample_assistant returned an empty answer for turn {len(answers)}")
        augmented.append({"role": "assistant", "content": answer})
        answers.append(answer)
    dialogue: list[Message] = [{"role": "system", "content": text}] if instruction_as_system else []
    for turn, (user, answer) in enumerate(zip(user_messages, answers)):  # step 2: instruction only once
        first_with_instruction = turn == 0 and not instruction_as_system
        dialogue.append({"role": "user", "content": f"{text}\n\n{user}" if first_with_instruction else user})
        dialogue.append({"role": "assistant", "content": answer})
    return dialogue


def tokenize_gatt_dialogue(tokenizer: Any, dialogue: Sequence[Message]) -> dict[str, list[int]]:
    """Token ids and loss mask of a GAtt dialogue: step 3, only the last answer is trained on."""
    return tokenize_dialogue(tokenizer, dialogue, loss_on="last")
