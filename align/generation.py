"""Batched sampling with the KV cache, shared by evaluation, rejection sampling and PPO rollouts.

`complete(model, tokenizer, texts)` sorts prompt texts by length, left-pads them in batches, samples with
`sample_tokens` and returns only the new text of each, cut at an optional stop string. `sample_tokens` is
align's decode loop (transformers' `generate` stays available as `decode="generate"`, the reference): rows
draw from their own seeds, finished rows leave the batch, and `decode="static"` decodes with a pre-allocated
KV cache and a compiled step (docs/generation.md). Prompts are rendered beforehand:
`chat_prompt_texts` applies the tokenizer's chat template (with its generation prompt); plain-text prompts
(pretraining probes) are used as is. Generation stops at `eos_token` or at the token the chat template closes
an answer with (`align.data.chat.answer_end_token_ids`: ChatML's `<|im_end|>`).
"""

from __future__ import annotations

import inspect
import weakref
import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StaticCache,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from .data.chat import Message, answer_end_token_ids, render
from .lora import base_model


def sample_seeds(run_seed: int, prompt_id: str, num_samples: int) -> list[int]:
    """The sampling seed of each of a prompt's `num_samples` answers (`row_seeds`): the same whichever batch or
    process samples it."""
    return [zlib.crc32(f"{run_seed}:{prompt_id}:{k}".encode()) for k in range(num_samples)]


def longest_first(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], add_special_tokens: bool = False
) -> list[int]:
    """The indices of `texts`, longest in tokens first (stable: equal lengths keep their order), so that
    batches taken in this order hold texts of similar length and pad little."""
    if not texts:
        return []
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=add_special_tokens).input_ids]
    return sorted(range(len(texts)), key=lambda i: -lengths[i])


def chat_prompt_texts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[Message]]) -> list[str]:
    """Chat text of each prompt (message lists ending with a user turn), ready for the answer to follow."""
    return [render(tokenizer, prompt) for prompt in prompts]


class RowSeededSampling(LogitsProcessor):
    """Sampling in which each row draws from its own seeded generator (the Gumbel-max trick: adding Gumbel
    noise to the log-probabilities and taking the arg-max samples from the softmax exactly). A row's tokens
    then depend on its seed and its own logits only, not on which rows share its batch or process; use with
    greedy decoding, after any temperature / top-p warper. `keep(rows)` follows a batch whose finished rows
    are dropped."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def keep(self, rows: Sequence[int]) -> None:
        """Keep the generators of these rows only (in this order)."""
        self.generators = [self.generators[row] for row in rows]

    def __call__(self, input_ids: torch.LongTensor | None, scores: torch.FloatTensor) -> torch.FloatTensor:
        if len(self.generators) != scores.shape[0]:
            raise ValueError(f"row_seeds: {len(self.generators)} seeds for a batch of {scores.shape[0]} rows")
        uniform = torch.stack([torch.rand(scores.shape[1], generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1 - 1e-7)))
        return scores.float().log_softmax(dim=-1) + gumbel.to(scores.device)


DECODERS = ("dynamic", "static", "generate")
DECODE_HELP = (
    "how generation decodes: 'dynamic' (align's loop: a KV cache that grows, finished rows dropped from the "
    "batch), 'static' (a pre-allocated KV cache and a torch.compile'd one-token step; finished rows keep their "
    "slot) or 'generate' (transformers' model.generate, the reference)"
)


def check_decode(decode: str, sharded: bool = False) -> None:
    """A clear error for a `decode` value that names no loop, or for the compiled loop over sharded weights
    (untested: FSDP's per-layer gathers inside a compiled step)."""
    if decode not in DECODERS:
        raise ValueError(f"decode: expected one of {', '.join(DECODERS)}, got {decode!r}")
    if decode == "static" and sharded:
        raise ValueError("decode: 'static' (a compiled step) is not offered for sharded models (fsdp / "
                         "shard_frozen); use 'dynamic'")  # fmt: skip


# One compiled decode step per model (compiling again per call would cost seconds each time).
_COMPILED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_step(model: Any) -> Any:
    """`model.forward` compiled for one-token steps on a static cache (shapes fixed: no recompiles per step)."""
    if model not in _COMPILED_STEPS:
        _COMPILED_STEPS[model] = torch.compile(model.forward)
    return _COMPILED_STEPS[model]


def cache_keyword(model: Any) -> str:
    """The name under which `model.forward` takes its KV cache: `cache` in transformers >= 5.24 (and align's
    model), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(base_model(model).forward).parameters else "past_key_values"


def all_processes_done(done: bool, device: torch.device) -> bool:
    """Whether every process is done (each passes its own flag); a no-op without a process group."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return done
    flag = torch.tensor([0.0 if done else 1.0], device=device)
    torch.distributed.all_reduce(flag)
    return flag.item() == 0.0


@torch.no_grad()
def sample_tokens(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    pad_token_id: int,
    eos_token_id: int | list[int],
    max_new_tokens: int = 64,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    row_seeds: Sequence[int] | None = None,
    output_logits: bool = False,
    output_logprobs: bool = False,
    synced_gpus: bool = False,
    decode: str = "dynamic",
    step_rows: list[torch.Tensor] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The new tokens (B, <= max_new_tokens) sampled after left-padded prompts with a KV cache; greedy when
    `temperature` is 0. Rows that end early are filled with `pad_token_id` after their `eos` (one id or a list
    of ids that each end an answer); the width is the number of steps taken.

    With `row_seeds` (one per row), each row samples from its own generator (`RowSeededSampling`), so a row's
    answer is the same whichever batch or process it is in; otherwise sampling draws from torch's global RNG.
    With `output_logits`, returns `(tokens, logits)`: the model's raw logits (B, T_new, vocab) at each step,
    before temperature or top-p. With `output_logprobs`, returns `(tokens, logprobs)`: log p(token) (B, T_new, fp32)
    under softmax(logits / temperature) (temperature 1 when greedy), computed at each step, so the (B, T_new,
    vocab) logits are never held (PPO reads the sampling policy's log-probs from them instead of a new forward).
    `synced_gpus`: the model is sharded, so every process steps until all are done. `decode` picks the loop
    (`DECODE_HELP`). `step_rows`, when given a list, receives for each forward the original row index of each
    row of its batch (-1 for a finished row still stepping), so a hook on the model can map what it records.
    """
    check_decode(decode)
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    warpers = LogitsProcessorList()
    if temperature > 0:
        warpers.append(TemperatureLogitsWarper(temperature))
        if top_p < 1:
            warpers.append(TopPLogitsWarper(top_p))
    row_sampler = RowSeededSampling(row_seeds) if temperature > 0 and row_seeds is not None else None
    if output_logits and output_logprobs:
        raise ValueError("sample_tokens: ask for output_logits or output_logprobs, not both")
    scale = temperature if temperature > 0 else 1.0  # of the log-probs returned with output_logprobs
    if decode == "generate":
        result = generate_tokens(
            model, input_ids, attention_mask, pad_token_id=pad_token_id, eos_ids=eos_ids,
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature,
            warpers=warpers, row_sampler=row_sampler, output_logits=output_logits or output_logprobs,
            synced_gpus=synced_gpus, step_rows=step_rows,
        )  # fmt: skip
        if not output_logprobs:
            return result
        tokens, logits = result
        return tokens, sampled_logprobs(logits, tokens, scale)
    static = decode == "static"
    B, P = input_ids.shape
    device = input_ids.device
    eos = torch.tensor(eos_ids, device=device)
    tokens = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    logits_out = None
    logprobs_out = torch.zeros(B, max_new_tokens, device=device) if output_logprobs else None
    rows = torch.arange(B, device=device)  # the original row of each batch row; -1: finished, still stepping
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if static:
        cache = StaticCache(config=model.config, max_cache_len=P + max_new_tokens)
        mask = F.pad(attention_mask.long(), (0, max_new_tokens))  # the whole cache's slots; future ones 0
        forward = compiled_step(model)
    else:
        cache = DynamicCache(config=model.config)
        mask = attention_mask.long()
        forward = model
    cache_argument = {cache_keyword(model): cache}
    # The prefill runs eagerly: its shape changes with every prompt batch.
    logits = model(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
        **cache_argument,
    ).logits[:, -1]  # fmt: skip
    next_position = positions[:, -1:] + 1
    steps = 0
    for step in range(max_new_tokens):
        if step_rows is not None:
            step_rows.append(rows.clone())
        live = rows >= 0
        # As transformers' generate: fp32 scores, the end of an answer forbidden before `min_new_tokens`, then
        # the warpers, then the draw.
        scores = logits.to(torch.float32, copy=True)  # the raw logits stay as they are for `output_logits`
        if step < min_new_tokens:
            scores[:, eos] = float("-inf")
        scores = warpers(None, scores)
        if row_sampler is not None:
            next_tokens = row_sampler(None, scores).argmax(dim=-1)
        elif temperature > 0:
            next_tokens = torch.multinomial(scores.softmax(dim=-1), num_samples=1)[:, 0]
        else:
            next_tokens = scores.argmax(dim=-1)
        tokens[rows[live], step] = next_tokens[live]
        if output_logits:
            if logits_out is None:
                logits_out = logits.new_zeros(B, max_new_tokens, logits.shape[-1])
            logits_out[rows[live], step] = logits[live]
        if output_logprobs:
            step_logprobs = sampled_logprobs(logits[:, None], next_tokens[:, None], scale)[:, 0]
            logprobs_out[rows[live], step] = step_logprobs[live]
        steps = step + 1
        finished = torch.isin(next_tokens, eos) | ~live
        done = bool(finished.all())
        if synced_gpus:
            done = all_processes_done(done, device)
        if done or steps == max_new_tokens:
            break
        if static:
            mask[:, P + step] = 1
        else:
            # Finished rows leave the batch (and the cache), so the steps left cost only the rows still going;
            # one stays while other processes still step a sharded model.
            keep = ~finished
            if not keep.any():
                keep[0] = True
            if not keep.all():
                index = keep.nonzero()[:, 0]
                cache.batch_select_indices(index)
                rows, finished, next_tokens = rows[index], finished[index], next_tokens[index]
                mask, next_position = mask[index], next_position[index]
                if row_sampler is not None:
                    row_sampler.keep(index.tolist())
            mask = F.pad(mask, (0, 1), value=1)
        rows = rows.masked_fill(finished, -1)
        logits = forward(
            input_ids=next_tokens[:, None], attention_mask=mask, position_ids=next_position, use_cache=True,
            **cache_argument,
        ).logits[:, -1]  # fmt: skip
        next_position = next_position + 1
    tokens = tokens[:, :steps]
    if output_logits:
        return tokens, logits_out[:, :steps]
    if output_logprobs:
        return tokens, logprobs_out[:, :steps]
    return tokens


def sampled_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) under softmax(logits / temperature): logits (B, T, vocab), tokens (B, T) -> (B, T) fp32."""
    scaled = logits.float() / temperature
    return scaled.gather(-1, tokens[..., None])[..., 0] - torch.logsumexp(scaled, dim=-1)


def generate_tokens(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    pad_token_id: int,
    eos_ids: list[int],
    max_new_tokens: int,
    min_new_tokens: int,
    temperature: float,
    warpers: LogitsProcessorList,
    row_sampler: RowSeededSampling | None,
    output_logits: bool,
    synced_gpus: bool,
    step_rows: list[torch.Tensor] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`sample_tokens` through transformers' `model.generate` (decode='generate'): the reference loop, in which
    every row steps to the end (`step_rows` gets every row for each step)."""
    if row_sampler is not None:
        sampling = {"do_sample": False, "logits_processor": LogitsProcessorList([*warpers, row_sampler])}
    elif temperature > 0:
        sampling = {"do_sample": True, "logits_processor": warpers}
    else:
        sampling = {"do_sample": False}
    generated = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=eos_ids,
        use_cache=True,
        synced_gpus=synced_gpus,
        **sampling,
        **({"return_dict_in_generate": True, "output_logits": True} if output_logits else {}),
    )
    tokens = (generated.sequences if output_logits else generated)[:, input_ids.shape[1] :]
    if step_rows is not None:
        step_rows.extend(torch.arange(len(tokens), device=tokens.device) for _ in range(tokens.shape[1]))
    return (tokens, torch.stack(generated.logits, dim=1)) if output_logits else tokens


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
    row_seeds: Sequence[int] | None = None,
    token_counts: list[int] | None = None,
    **sampling: Any,
) -> list[str]:
    """The continuation of each text (greedy when `temperature` is 0), without the prompt or special tokens.

    `token_counts`, when given a list, receives each answer's generated tokens (before the token that ended it;
    `max_new_tokens` for an answer cut at the limit), in the order of `texts`.

    Texts are sorted by length and decoded `batch_size` rows at a time, so rows of similar length share a
    batch (little padding); answers come back in the order of `texts`. With `row_seeds` (one per text) each
    row samples from its own seed, so its answer does not depend on the other texts; without, sampling draws
    from torch's global RNG (in the sorted order). Chat texts already start with `<s>`; pass
    `add_special_tokens=True` for plain text that should get it. Other keywords (`min_new_tokens`,
    `synced_gpus`, `decode`) go to `sample_tokens`.
    """
    if row_seeds is not None and len(row_seeds) != len(texts):
        raise ValueError(f"row_seeds: {len(row_seeds)} seeds for {len(texts)} texts")
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    outputs: list[str] = [""] * len(texts)
    stop_ids = answer_end_token_ids(tokenizer)
    order = longest_first(tokenizer, texts, add_special_tokens)
    counts = [0] * len(texts)
    try:
        for start in range(0, len(texts), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
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
                row_seeds=[row_seeds[i] for i in chunk] if row_seeds is not None else None,
                **sampling,
            )
            for i, text in zip(chunk, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                outputs[i] = (text.split(stop)[0] if stop else text).strip()
            if token_counts is not None:
                for i, count in zip(chunk, generated_token_counts(new_tokens, stop_ids)):
                    counts[i] = int(count)
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    if token_counts is not None:
        token_counts[:] = counts
    return outputs


def generated_token_counts(new_tokens: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """Per row of `new_tokens` (generated ids; a row that ended is padded after its stop token), the tokens
    before its first stop token, or all of them when none ended it (an answer cut at the limit)."""
    stopped = torch.isin(new_tokens, torch.tensor(list(stop_ids), device=new_tokens.device))
    width = torch.full_like(stopped[:, 0], new_tokens.shape[1], dtype=torch.long)
    return torch.where(stopped.any(1), stopped.long().argmax(1), width)
