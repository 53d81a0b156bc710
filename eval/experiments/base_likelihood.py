"""The pretrained base model's likelihood of an answer, as a reward source and as a judge (issue 33, an experiment).

The demo's reward models rank a right sum or fact against its near miss at about chance (rm_contrasts.py), yet
the pretrained model they start from ranks them right almost every time by how likely it finds each answer
(rounds_compound.md, fourteenth session): the knowledge is in the base model, and a scalar head trained on 2,500
noisy preference pairs does not learn to read it. This module measures that and lets a run use it:

- `answer_logprobs(model, tokenizer, prompts, answers)`: each answer's mean per-token log-probability (its end of
  sequence included) after the chat-formatted prompt;
- `mean_logprob(prompts, answers)`: the same under the causal LM named by ALIGN_LIKELIHOOD_MODEL, as a function
  source of a reward spec (align.reward_sources), for example the rounds with the base model's likelihood added
  to the Llama 2 gate's logit:

    ALIGN_LIKELIHOOD_MODEL=runs/lk/round-0/pretrain/final align round 3 --name lk --reward '{"combine":
        "llama2_gate", "sources": {"helpfulness": {"model": "round:helpfulness"}, "safety": {"model":
        "round:safety"}, "knowledge": {"function": "eval.experiments.base_likelihood:mean_logprob", "weight": 1.0}}}'

- `python eval/experiments/base_likelihood.py DIR...`: rm_contrasts.py's table with causal LMs as the judges.

Not a demo setting: a probe of where the content signal is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from align.data import load_tokenizer
from align.generation import chat_prompt_texts
from align.logprobs import token_logprobs_and_entropy
from align.modeling.loading import load_causal_lm
from align.ppo import final_hidden_states

_LOADED: dict[str, tuple[Any, Any]] = {}


def answer_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict[str, str]]],
    answers: Sequence[str],
    batch_size: int = 32,
) -> list[float]:
    """Mean log-probability per token of each answer (and the end of sequence after it) given its prompt in the
    tokenizer's chat template. The mean, not the sum: answers of different lengths stay comparable."""
    texts = chat_prompt_texts(tokenizer, list(prompts))
    means = []
    for start in range(0, len(texts), batch_size):
        rows = [
            (
                tokenizer(text, add_special_tokens=False).input_ids,
                tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id],
            )
            for text, answer in zip(texts[start : start + batch_size], answers[start : start + batch_size])
        ]
        length = max(len(prompt) + len(answer) for prompt, answer in rows)
        ids = torch.full((len(rows), length), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for row, (prompt, answer) in enumerate(rows):  # right padding: positions are those of one sequence alone
            ids[row, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            mask[row, : len(prompt) + len(answer)] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        with torch.no_grad():  # the LM head a chunk of positions at a time (align.logprobs): no [rows, T, vocab]
            hidden = final_hidden_states(model, ids, mask)
            logprobs, _ = token_logprobs_and_entropy(model, hidden[:, :-1], ids[:, 1:])  # position t: token t + 1
        for row, (prompt, answer) in enumerate(rows):
            means.append(logprobs[row, len(prompt) - 1 : len(prompt) + len(answer) - 1].mean().item())
    return means


def load_likelihood_model(path: str) -> tuple[Any, Any]:
    """A causal LM and its tokenizer, loaded once per process."""
    if path not in _LOADED:
        _LOADED[path] = (load_causal_lm(path, "likelihood model").eval(), load_tokenizer(path))
    return _LOADED[path]


def mean_logprob(prompts: Sequence[Sequence[dict[str, str]]], answers: Sequence[str]) -> list[float]:
    """A reward spec's function source: `answer_logprobs` under the model in ALIGN_LIKELIHOOD_MODEL."""
    path = os.environ.get("ALIGN_LIKELIHOOD_MODEL")
    if not path:
        raise ValueError("ALIGN_LIKELIHOOD_MODEL: set it to the causal LM whose likelihood scores the answers")
    model, tokenizer = load_likelihood_model(path)
    return answer_logprobs(model, tokenizer, prompts, answers)


def likelihood_judge(path: str) -> Any:
    """The causal LM in `path` as a scorer of world prompts' answers (rm_contrasts.py's `Scorer`)."""
    model, tokenizer = load_likelihood_model(path)
    return lambda prompts, answers: answer_logprobs(model, tokenizer, [p.messages for p in prompts], answers)


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """`python eval/experiments/base_likelihood.py DIR...`: rm_contrasts.py's table with causal LMs as the judges,
    each answer scored by its mean log-probability under the model."""
    from rm_contrasts import judge_contrasts  # this script's folder

    from align.checkpoint import require_model_dir

    return judge_contrasts(
        argv, __doc__, "causal LM directories (a pretrained base, an SFT model, a policy)",
        lambda path: require_model_dir(path, "model"), lambda path: likelihood_judge(str(path)),
        "model (mean log-likelihood)", "base_likelihood",
    )  # fmt: skip


if __name__ == "__main__":
    main()
