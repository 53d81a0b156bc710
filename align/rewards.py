"""Reward math and reward-model scoring shared by the reward-model, rejection-sampling and PPO stages.

- `margin_for_strength(strength, scheme)`: the preference-strength margins of docs/method.md §5 (Llama 2, Table 28);
- `ranking_loss(chosen, rejected, margin)`: -log sigmoid(r_c - r_r - m), the binary ranking loss with margin;
- `score(model, tokenizer, prompts, responses)`: one batched pass of a reward model over (prompt, response)
  pairs in the chat format, returning the raw scalar and its sigmoid;
- `gated_reward`, `logit`, `whiten`, `ppo_reward`: the safety-gated reward of docs/method.md §7 and the
  whiten(logit(R_c)) that PPO maximizes (the KL penalty is added per token by `align.ppo`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .data.chat import Message
from .data.preferences import MARGINS, margin_for_strength  # noqa: F401  (the strength -> margin table lives with the data)


def ranking_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected - margin) over the batch (docs/method.md §5)."""
    return -F.logsigmoid(chosen - rejected - margin).mean()


class Scores(NamedTuple):
    """Reward-model outputs for a batch of responses: raw scalars and their sigmoid (in (0, 1)), both (N,)."""

    raw: torch.Tensor
    sigmoid: torch.Tensor


def conversation_ids(tokenizer: Any, prompt: Sequence[Message], response: str) -> list[int]:
    """Token ids of prompt + answer in the chat format, exactly as the reward model was trained on them."""
    messages = [*prompt, {"role": "assistant", "content": response}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


@torch.no_grad()
def score(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    responses: Sequence[str],
    batch_size: int = 32,
) -> Scores:
    """Score each (prompt, response) with a sequence-classification reward model, in batches.

    Rows are right-padded; the model reads its score at each row's last real token (the `</s>` of the answer).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
    was_training = model.training
    model.eval()
    raw = []
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [
                conversation_ids(tokenizer, prompt, response)
                for prompt, response in zip(prompts[start : start + batch_size], responses[start : start + batch_size])
            ]
            width = max(len(row) for row in rows)
            input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for index, row in enumerate(rows):
                input_ids[index, : len(row)] = torch.tensor(row)
                attention_mask[index, : len(row)] = 1
            logits = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)).logits
            raw.append(logits[:, 0].float().cpu())
    finally:
        model.train(was_training)
    values = torch.cat(raw) if raw else torch.zeros(0)
    return Scores(values, torch.sigmoid(values))


SAFETY_THRESHOLD = 0.15


def gated_reward(
    safety_score: torch.Tensor,
    helpful_score: torch.Tensor,
    is_safety: torch.Tensor,
    threshold: float = SAFETY_THRESHOLD,
) -> torch.Tensor:
    """R_c of docs/method.md §7 (Llama 2 paper, eq. in §3.2.3): the safety RM's score on safety prompts or when it
    falls below `threshold`, the helpfulness RM's score otherwise. Scores are sigmoids in (0, 1), all (N,)."""
    return torch.where(uses_safety(safety_score, is_safety, threshold), safety_score, helpful_score)


def uses_safety(
    safety_score: torch.Tensor, is_safety: torch.Tensor, threshold: float = SAFETY_THRESHOLD
) -> torch.Tensor:
    """Where R_c (`gated_reward`) is the safety score: safety prompts, and answers it scores below `threshold`."""
    return is_safety.bool() | (safety_score < threshold)


def logit(probability: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The inverse of the sigmoid: turns an RM's sigmoid score in (0, 1) back into an unbounded reward (§7)."""
    probability = probability.clamp(eps, 1 - eps)  # a score of exactly 0 or 1 would be -inf / inf
    return torch.log(probability) - torch.log1p(-probability)


def whiten(
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    shift_mean: bool = True,
    sum_across: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """(values - mean) / std over the batch (the entries where `mask` is true), so rewards of every batch share
    one scale; std is the population one. With `shift_mean=False` the mean is added back (scale only).
    `sum_across` sums a tensor over the processes (e.g. `accelerator.reduce(t, "sum")`) when each holds part of
    the batch, so that mean and std are the whole batch's."""
    weights = mask.float() if mask is not None else torch.ones_like(values)
    total = sum_across or (lambda tensor: tensor)
    count = total(weights.sum())
    mean = total((values * weights).sum()) / count
    variance = total(((values - mean) ** 2 * weights).sum()) / count
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    return whitened if shift_mean else whitened + mean


def ppo_reward(
    safety_score: torch.Tensor,
    helpful_score: torch.Tensor,
    is_safety: torch.Tensor,
    threshold: float = SAFETY_THRESHOLD,
) -> torch.Tensor:
    """The per-sequence PPO reward of docs/method.md §7 before the KL penalty: whiten(logit(R_c))."""
    return whiten(logit(gated_reward(safety_score, helpful_score, is_safety, threshold)))
