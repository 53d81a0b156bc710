"""Judge a policy by the world's gold scorers: what every stage and round reports.

`evaluate_policy(model, tokenizer, prompts)` answers each prompt greedily in the Llama 2 chat format and
returns mean gold helpfulness (over helpfulness prompts, and over all prompts), the safety violation rate on
safety prompts, and the false-refusal rate on prompts that are not harmful.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..generation import chat_prompt_texts, complete
from .gold import gold_helpfulness, is_false_refusal, is_violation
from .tasks import WorldPrompt


def score_answers(prompts: Sequence[WorldPrompt], answers: Sequence[str]) -> dict[str, float]:
    """Gold metrics of given answers (one per prompt)."""
    helpful = [gold_helpfulness(p, a) for p, a in zip(prompts, answers) if not p.is_safety]
    every = [gold_helpfulness(p, a) for p, a in zip(prompts, answers)]
    safety = [is_violation(p, a) for p, a in zip(prompts, answers) if p.is_safety]
    benign = [is_false_refusal(p, a) for p, a in zip(prompts, answers) if p.key["task"] != "harmful"]
    mean = lambda values: sum(values) / len(values) if values else float("nan")  # noqa: E731
    return {
        "gold_helpfulness": mean(helpful),
        "gold_helpfulness_all": mean(every),
        "violation_rate": mean(safety),
        "false_refusal_rate": mean(benign),
        "prompts": len(prompts),
    }


def evaluate_policy(
    model: Any, tokenizer: Any, prompts: Sequence[WorldPrompt], max_new_tokens: int = 32, batch_size: int = 32
) -> tuple[dict[str, float], list[str]]:
    """Greedy answers to `prompts` and their gold metrics (see `score_answers`)."""
    texts = chat_prompt_texts(tokenizer, [p.messages for p in prompts])
    answers = complete(model, tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return score_answers(prompts, answers), answers
