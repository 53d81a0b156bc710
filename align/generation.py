"""Batched sampling with the KV cache, shared by evaluation, rejection sampling and PPO rollouts.

`complete(model, tokenizer, texts)` left-pads a batch of prompt texts, runs `model.generate` (KV cache on),
and returns only the new text of each row, cut at an optional stop string. Prompts are rendered beforehand:
`chat_prompt_texts` applies the tokenizer's chat template (with its generation prompt); plain-text prompts
(pretraining probes) are used as is. Generation stops at `eos_token` or at the token the chat template closes
an answer with (`align.data.chat.answer_end_token_ids`: ChatML's `<|im_end|>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from .data.chat import Message, answer_end_token_ids, render


def chat_prompt_texts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[Message]]) -> list[str]:
    """Chat text of each prompt (message lists ending with a user turn), ready for the answer to follow."""
    return [render(tokenizer, prompt) for prompt in prompts]


class RowSeededSampling(LogitsProcessor):
    """Sampling in which each row draws from its own seeded generator (the Gumbel-max trick: adding Gumbel
    noise to the log-probabilities and taking the arg-max samples from the softmax exactly). A row's tokens
    then depend on its seed and its own logits only, not on which rows share its batch or process; use with
    greedy decoding, after any temperature / top-p warper."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if len(self.generators) != scores.shape[0]:
            raise ValueError(f"row_seeds: {len(self.generators)} seeds for a batch of {scores.shape[0]} rows")
        uniform = torch.stack([torch.rand(scores.shape[1], generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1 - 1e-7)))
        return scores.float().log_softmax(dim=-1) + gumbel.to(scores.device)


@torch.no_grad()
def sample_tokens(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    pad_token_id: int,
    eos_token_id: int | list[int],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    row_seeds: Sequence[int] | None = None,
    output_logits: bool = False,
    **generate_kwargs: Any,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The new tokens (B, <= max_new_tokens) `model.generate` appends to left-padded prompts, with the KV cache;
    greedy when `temperature` is 0. Rows that end early are filled with `pad_token_id` after their `eos` (one id
    or a list of ids that each end an answer).

    With `row_seeds` (one per row), each row samples from its own generator (`RowSeededSampling`), so a row's
    answer is the same whichever batch or process it is in; otherwise sampling draws from torch's global RNG.
    With `output_logits`, returns `(tokens, logits)`: the model's raw logits (B, T_new, vocab) at each step,
    before temperature or top-p (PPO reads the sampling policy's log-probs from them instead of a new forward)."""
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {}
    if sampling and row_seeds is not None:
        processors = [TemperatureLogitsWarper(temperature)] + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])
        generate_kwargs["logits_processor"] = LogitsProcessorList([*processors, RowSeededSampling(row_seeds)])
        sampling = {}
    generated = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        use_cache=True,
        **({"do_sample": False} if not sampling else sampling),
        **({"return_dict_in_generate": True, "output_logits": True} if output_logits else {}),
        **generate_kwargs,
    )
    if output_logits:
        return generated.sequences[:, input_ids.shape[1] :], torch.stack(generated.logits, dim=1)
    return generated[:, input_ids.shape[1] :]


@torch.no_grad()
def complete(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    stop: str | None = None,
    add_special_tokens: bool = False,
    **generate_kwargs: Any,
) -> list[str]:
    """The continuation of each text (greedy when `temperature` is 0), without the prompt or special tokens.

    Chat texts already start with `<s>`; pass `add_special_tokens=True` for plain text that should get it.
    Other keywords (e.g. `min_new_tokens`) go to `model.generate`.
    """
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    outputs: list[str] = []
    stop_ids = answer_end_token_ids(tokenizer)
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                return_tensors="pt",
                padding=True,
                add_special_tokens=add_special_tokens,
            ).to(model.device)
            new_tokens = sample_tokens(
                model,
                batch["input_ids"],
                batch["attention_mask"],
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stop_ids,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                **generate_kwargs,
            )
            for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True):
                text = text.split(stop)[0] if stop else text
                outputs.append(text.strip())
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return outputs
