"""Per-token log-probabilities and entropies of a causal LM without its whole [rows, T, vocab] logits.

At Llama 3's vocabulary (128,256 tokens) the fp32 logits of a PPO mini-batch are the largest tensor of the step:
8 rows x 512 positions x 128,256 x 4 bytes = 2.1 GB, and the log-softmax and its gradient triple that. Here the
LM head runs over `chunk_tokens` positions at a time, each chunk under activation checkpointing, so forward and
backward hold one chunk's logits (chunk_tokens x vocab) at once whatever the batch and length; the results equal
the whole-logits computation (tests/test_logprobs.py). `chunk_tokens=0` computes the whole logits at once: the
reference, and what `eval/bench/vocab_memory.py` measures against.

SFT needs nothing of this: TRL's `SFTTrainer` already computes its loss with its fused, chunked LM head.

`answer_logprobs` uses it to score whole answers: each answer's mean log-probability under a causal LM (the
`likelihood` reward source of align.reward_sources).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from .data.chat import Message, answer_end_token_ids
from .generation import chat_prompt_texts
from .modeling import decoder_trunk, logits_from_hidden

LOGITS_CHUNK_HELP = (
    "positions whose vocabulary logits are computed at a time for log-probs and entropies (memory: chunk x vocab "
    "x 20 bytes in fp32, whatever the batch); 0 = all at once"
)
DEFAULT_CHUNK_TOKENS = 1024


def _chunk_logprobs(
    causal_lm: torch.nn.Module, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(token) and the entropy (no gradient) for hidden states (N, C) and tokens (N,), in fp32."""
    logits = logits_from_hidden(causal_lm, hidden).float() / temperature  # (N, vocab)
    log_normalizer = torch.logsumexp(logits, dim=-1)  # (N,)
    logprobs = logits.gather(-1, tokens[:, None])[:, 0] - log_normalizer
    with torch.no_grad():
        probabilities = torch.softmax(logits, dim=-1)
        entropy = log_normalizer - (probabilities * logits).sum(-1)
    return logprobs, entropy


def token_logprobs_and_entropy(
    causal_lm: torch.nn.Module,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(tokens) under softmax(logits / temperature) and the distribution's entropy, both (B, T) in fp32.

    `hidden` (B, T, C) are the final hidden states of the positions that predict `tokens` (B, T) (position t
    predicts token t + 1: pass `hidden[:, :-1]` for `tokens = ids[:, 1:]`). The log-probs carry the gradient;
    the entropy is a metric and does not.
    """
    B, T, C = hidden.shape
    flat_hidden, flat_tokens = hidden.reshape(B * T, C), tokens.reshape(B * T)
    if chunk_tokens <= 0 or B * T <= chunk_tokens:
        logprobs, entropy = _chunk_logprobs(causal_lm, flat_hidden, flat_tokens, temperature)
        return logprobs.view(B, T), entropy.view(B, T)
    recompute = torch.is_grad_enabled() and flat_hidden.requires_grad
    logprob_chunks, entropy_chunks = [], []
    for start in range(0, B * T, chunk_tokens):
        piece = (causal_lm, flat_hidden[start : start + chunk_tokens], flat_tokens[start : start + chunk_tokens])
        if recompute:
            # Only the chunk's hidden states are kept for backward; its logits are recomputed there, one chunk at
            # a time, instead of every chunk's logits living until the loss's backward.
            logprobs, entropy = checkpoint(_chunk_logprobs, *piece, temperature, use_reentrant=False)
        else:
            logprobs, entropy = _chunk_logprobs(*piece, temperature)
        logprob_chunks.append(logprobs)
        entropy_chunks.append(entropy.detach())
    return torch.cat(logprob_chunks).view(B, T), torch.cat(entropy_chunks).view(B, T)


def final_hidden_states(causal_lm: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The decoder's last hidden states (B, T, C) of a causal LM, without its vocabulary projection."""
    trunk = decoder_trunk(causal_lm)
    return trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


@torch.no_grad()
def answer_logprobs(
    causal_lm: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[Message]],
    answers: Sequence[str],
    batch_size: int = 32,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> torch.Tensor:
    """Each answer's mean log-probability per token (N,): the answer as plain text, then the end of sequence,
    after its prompt in the tokenizer's chat template (with the generation prompt). The mean, not the sum, so
    that answers of different lengths stay comparable.

    The answer is not closed by the template's own closing tokens, as SFT tokenizes a dialogue, because the model
    this scores with is typically a pretrained base that never saw them: with them the demo's base prefers a
    refusal to a helpful answer in 70% of pairs, without them in 3% (eval/experiments/rounds_compound.md)."""
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else answer_end_token_ids(tokenizer)[0]
    rows = [
        (tokenizer(text, add_special_tokens=False).input_ids, tokenizer(answer, add_special_tokens=False).input_ids)
        for text, answer in zip(chat_prompt_texts(tokenizer, prompts), answers)
    ]
    rows = [(prompt, answer + [end]) for prompt, answer in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    device = next(causal_lm.parameters()).device
    means = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        length = max(len(prompt) + len(answer) for prompt, answer in batch)
        ids = torch.full((len(batch), length), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, (prompt, answer) in enumerate(batch):  # right padding: each row's positions are its own alone
            ids[i, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            attention[i, : len(prompt) + len(answer)] = 1
        ids, attention = ids.to(device), attention.to(device)
        hidden = final_hidden_states(causal_lm, ids, attention)
        logprobs, _ = token_logprobs_and_entropy(causal_lm, hidden[:, :-1], ids[:, 1:], chunk_tokens=chunk_tokens)
        for i, (prompt, answer) in enumerate(batch):  # position t predicts token t + 1
            means.append(logprobs[i, len(prompt) - 1 : len(prompt) + len(answer) - 1].mean().cpu())
    return torch.stack(means) if means else torch.zeros(0)
