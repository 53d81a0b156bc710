"""Collect preference pairs from a policy in the world: the data-collection step of every RLHF round (§8).

The policy answers each prompt twice (sampled, batched across prompts with the KV cache) and the world's
simulated annotator labels the pair, with its noise and strength buckets. Pairs of the policy's own samples are
what keeps the reward models accurate on the distribution they will judge (the paper collects each round's
data with the latest models for this reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..generation import chat_prompt_texts, complete, sample_seeds
from .tasks import WorldPrompt
from .world import World


def sample_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[WorldPrompt],
    per_prompt: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 64,
    seed: int = 0,
    greedy_first: bool = False,
) -> list[list[str]]:
    """`per_prompt` sampled answers to each prompt; rows of many prompts share a batch, each row sampled from
    its own seed (of `seed`, the prompt's id and the answer's index), so the answers do not depend on the
    batching. With `greedy_first`, each prompt's first answer is the policy's greedy answer instead (the one a
    greedy evaluation judges) and the other `per_prompt - 1` are sampled."""
    texts = chat_prompt_texts(tokenizer, [p.messages for p in prompts])
    sampled = per_prompt - 1 if greedy_first else per_prompt
    flat = complete(
        model,
        tokenizer,
        [text for text in texts for _ in range(sampled)],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        row_seeds=[row_seed for p in prompts for row_seed in sample_seeds(seed, p.id, sampled)],
    )
    answers = [flat[i * sampled : (i + 1) * sampled] for i in range(len(prompts))]
    if greedy_first:
        greedy = complete(model, tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        answers = [[first, *rest] for first, rest in zip(greedy, answers)]
    return answers


def policy_preference_pairs(
    world: World,
    model: Any,
    tokenizer: Any,
    prompts: Sequence[WorldPrompt],
    target: str,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 64,
) -> list[dict[str, Any]]:
    """Pairs of two policy samples per prompt, labelled for `target` by the world's annotator (records in the
    format `align.data.load_preferences` reads; prompts whose answers are identical or empty give none)."""
    answers = sample_answers(
        model,
        tokenizer,
        prompts,
        2,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
    )
    return label_pairs(world, prompts, {prompt.id: pair for prompt, pair in zip(prompts, answers)}, target, seed)


def label_pairs(
    world: World, prompts: Sequence[WorldPrompt], answers: dict[str, list[str]], target: str, seed: int = 0
) -> list[dict[str, Any]]:
    """The world annotator's labels of two sampled answers per prompt (`answers` by prompt id, which may have
    been sampled on several processes), in prompt order: the labels draw from one seeded stream."""
    return world.preference_pairs(prompts, target, seed=seed, sampler=lambda prompt, _: answers[prompt.id])
