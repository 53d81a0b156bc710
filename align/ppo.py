"""PPO with the safety-gated reward and a per-token KL penalty (docs/method.md §7), on accelerate.

One iteration (`PPOTrainer.step`), for a batch of prompts split over the processes:

1. rollout: the policy samples a response per row (`align.generation.sample_tokens`, KV cache on; with
   `samples_per_prompt` k, k rows share a prompt); tokens after the first `</s>` are padding; the sampling
   policy's log-probs are read from generate's logits, and pi_0's log-probs and the values come from one no-grad
   forward of the reference and of the value model;
2. scoring: the reward sources score the decoded answers, each reward model with its own tokenizer
   (`align.reward_sources`); the sequence reward is whiten(logit(R_c)) under the Llama 2 gate (the default
   spec; the weighted sum or minimum of the sources otherwise), whitened over the whole batch, gathered across
   processes (with `reward_baseline: prompt`, less the mean reward of the same prompt's `samples_per_prompt`
   answers first: the baseline of RLOO and GRPO);
3. per-token rewards: -kl_coef * (log pi_theta - log pi_0) on every response token, plus the sequence reward
   on the last one (Ziegler et al. 2019; Llama 2 §3.2.3);
4. advantages by GAE (gamma, lambda) on the value model's per-token values;
5. update: for each of `ppo_epochs` passes, the batch is shuffled into mini-batches and each mini-batch takes one
   gradient step on the clipped surrogate plus the clipped value loss (Schulman et al. 2017).

The pure pieces (`compute_gae`, `ppo_losses`, `response_mask`) are functions so the tests can check them
against a hand-written computation. Metrics use TRL's names (`objective/kl`, `policy/clipfrac_avg`,
`loss/value_avg`, ...) and go to `<output_dir>/metrics.jsonl`; `objective/gold` is logged next to the reward
models' score when a gold scorer is given (the world), so reward hacking shows as the two diverging.

Every step is the same on any number of processes: each row samples from a seed of its iteration and batch
position (`align.generation.RowSeededSampling`), rewards and advantages are whitened over the whole batch, and
the mini-batches are drawn from the whole batch (every process holds the whole batch's rollout and takes an
equal share of each mini-batch) with losses divided by their token count over all processes.

On several processes, `fsdp` shards the policy and the value model with FSDP2 and `shard_frozen` the reference
and the reward models (`align.sharding`): generation then steps every process until all are done
(`synced_gpus`), gradients are clipped by their norm over every shard, and checkpoints are gathered into one
layout, so a sharded run takes the same steps as one process and resumes on any number of processes.

The value model is by default a separate model initialised from the helpfulness reward model (the paper's);
`shared_value_head` puts a value head on the policy's trunk instead (`PolicyWithValueHead`): the rollout reads
the values off the generation steps, and each mini-batch runs one model's forward and backward instead of two,
at the cost of the two losses sharing a trunk.

Checkpoints (`checkpoint-N/`: policy, value model or head, optimizer and iteration; sampling is seeded per
iteration) are written to a temporary folder and renamed into place; a restarted run resumes from the newest
one. With `lora` set, the policy is trained through LoRA adapters and the reference policy is the same model
with its adapters disabled (no copy).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .checkpoint import (
    EXTEND_HELP,
    RESUME_HELP,
    TRAINER_STATE,
    acquire_run_lock,
    check_same_tokenizer,
    check_vocabulary,
    checkpoint_bytes,
    finished_run,
    mark_done,
    prepare_run,
    release_run_lock,
    releases_its_folder_on_error,
    require_finite_training,
    require_model_dir,
    require_reward_model_dir,
    resumable_checkpoint,
    rotate_checkpoints,
    save_pretrained_atomic,
    write_directory_atomic,
)
from .config import check_field_types, check_ranges, device_precision
from .data import answer_end_token_ids, load_tokenizer
from .generation import DECODE_HELP, chat_prompt_texts, check_decode, sample_tokens
from .io import naming_a_full_disk
from .logprobs import DEFAULT_CHUNK_TOKENS, LOGITS_CHUNK_HELP, final_hidden_states, token_logprobs_and_entropy
from .lora import base_model, lora_config, parse_lora_setting
from .modeling import (
    decoder_trunk,
    final_norm,
    load_causal_lm,
    load_sequence_classifier,
    score_head,
)
from .prompts import PROMPTS_HELP, check_prompt_lengths
from .reward_guard import AdaptiveKLController, RewardHackingGuard
from .reward_sources import REWARD_HELP, RewardScorer, parse_reward_spec
from .rewards import SAFETY_THRESHOLD, whiten
from .sharding import (
    FSDP_HELP,
    SHARD_FROZEN_HELP,
    causal_lm_parts,
    full_optimizer_state,
    full_state_dict,
    gathered_model,
    load_full_state_dict,
    load_optimizer_state,
    shard_model,
    sharding_active,
)
from .sources import describe_sources, require_source
from .tracking import METRICS_FILE, MetricsWriter, mark_resume, resume_points

GoldScorer = Callable[[dict[str, Any], str], float]
VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class PPOConfig:
    """PPO settings; defaults are the paper's (docs/method.md §7): AdamW (0.9, 0.95, eps 1e-5), weight decay 0.1,
    grad clip 1.0, constant lr 1e-6, beta 0.01, clip range 0.2, batch 512 prompts, mini-batch 64, one gradient
    step per mini-batch. Field names follow TRL's former `PPOConfig` where it had one."""

    shipped_configs = "ppo"  # `--config NAME`: align/configs/ppo/NAME.yaml (not a field)

    policy: str = field(default="", metadata={"help": "checkpoint to start from (rejection-sampled or SFT model)"})
    helpfulness_rm: str = field(default="", metadata={"help": "helpfulness reward model checkpoint"})
    safety_rm: str = field(default="", metadata={"help": "safety reward model checkpoint"})
    reward: dict | str | None = field(default=None, metadata={"help": REWARD_HELP})
    reference: str | None = field(default=None, metadata={"help": "frozen pi_0 (default: the starting policy)"})
    value_model: str | None = field(
        default=None, metadata={"help": "value model init (default: the helpfulness reward model)"}
    )
    shared_value_head: bool = field(
        default=False,
        metadata={"help": "value head on the policy's trunk instead of a value model (faster; not the paper's)"},
    )
    output_dir: str = field(default="runs/ppo", metadata={"help": "run folder: checkpoints, metrics, final/"})
    prompts: str | None = field(default=None, metadata={"help": PROMPTS_HELP})
    world_seed: int = field(default=0, metadata={"help": "seed of the synthetic world (prompts=world)"})
    world_prompts: int = field(default=512, metadata={"help": "train prompts drawn from the world"})
    world_prompt_seed: int = field(default=0, metadata={"help": "which world prompts (e.g. the round number)"})
    num_iterations: int = field(default=200, metadata={"help": "PPO iterations (the paper: 200-400)"})
    batch_size: int = field(
        default=512, metadata={"help": "answers per iteration (prompts x samples_per_prompt), over all processes"}
    )
    mini_batch_size: int = field(default=64, metadata={"help": "rollouts per gradient step, over all processes"})
    ppo_epochs: int = field(default=1, metadata={"help": "passes over each batch (one step per mini-batch each)"})
    samples_per_prompt: int = field(
        default=1,
        metadata={"help": "answers sampled for each prompt of an iteration (batch_size counts answers, so an "
                          "iteration has batch_size / samples_per_prompt prompts)"},
    )  # fmt: skip
    reward_baseline: str = field(
        default="batch",
        metadata={"help": "batch: the sequence reward is whitened over the batch (the paper's); prompt: each "
                          "answer's reward minus the mean of its prompt's answers, then scaled by the batch's std "
                          "(needs samples_per_prompt > 1)"},
    )  # fmt: skip
    lr: float = field(default=1e-6, metadata={"help": "constant learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    adam_epsilon: float = field(default=1e-5, metadata={"help": "AdamW epsilon"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    kl_coef: float = field(default=0.01, metadata={"help": "beta of the KL penalty (0.005 for 34B/70B)"})
    kl_target: float | None = field(
        default=None,
        metadata={
            "help": "adaptive KL (Ziegler et al. 2019): steer kl_coef toward this KL per sequence; unset: fixed"
        },
    )
    kl_horizon: int = field(default=10000, metadata={"help": "adaptive KL horizon, in episodes"})
    guard_judge: str | None = field(
        default=None,
        metadata={"help": "reward-hacking guard: a held-out judge, the name of a reward source of weight 0 or 'gold' "
                          "(the world's); the alarm fires when the optimised reward rises while it falls"},
    )  # fmt: skip
    guard_window: int = field(default=10, metadata={"help": "reward-hacking guard: iterations of a trend"})
    guard_max_kl: float | None = field(
        default=None, metadata={"help": "reward-hacking guard: alarm when the KL per sequence passes this"}
    )
    guard_action: str = field(
        default="warn", metadata={"help": "on the guard's alarm: warn (log and print) or stop (end the run there)"}
    )
    guard_keep_best: bool = field(
        default=False,
        metadata={"help": "keep the policy at the end of the guard_window with the best mean held-out judge score "
                          "in <output_dir>/best (needs guard_judge)"},
    )  # fmt: skip
    cliprange: float = field(default=0.2, metadata={"help": "PPO ratio clip range"})
    cliprange_value: float = field(default=0.2, metadata={"help": "value clip range"})
    vf_coef: float = field(default=0.1, metadata={"help": "weight of the value loss"})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda"})
    whiten_advantages: bool = field(default=True, metadata={"help": "whiten advantages over the batch"})
    response_length: int = field(default=128, metadata={"help": "longest sampled response in tokens"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "rollout nucleus sampling threshold"})
    safety_threshold: float = field(default=SAFETY_THRESHOLD, metadata={"help": "gate of docs/method.md §7"})
    logits_chunk_tokens: int = field(default=DEFAULT_CHUNK_TOKENS, metadata={"help": LOGITS_CHUNK_HELP})
    forward_batch_size: int = field(
        default=32,
        metadata={"help": "rows per no-grad forward / generate call: bounds the KV cache (align.plan's "
                          "--forward_batch_size)"},
    )  # fmt: skip
    decode: str = field(default="dynamic", metadata={"help": DECODE_HELP})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute the trained models' activations in backward (align.plan's "
                                         "--activation_checkpointing)"}
    )  # fmt: skip
    fsdp: bool = field(default=False, metadata={"help": FSDP_HELP})
    shard_frozen: bool = field(default=False, metadata={"help": SHARD_FROZEN_HELP})
    lora: dict | str | None = field(
        default=None, metadata={"help": "LoRA settings {r, alpha, dropout, target_modules}; off if unset"}
    )
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16 (accelerate)"})
    save_steps: int = field(default=20, metadata={"help": "checkpoint every N iterations"})
    save_total_limit: int = field(default=2, metadata={"help": "keep this many checkpoints"})
    logging_steps: int = field(default=1, metadata={"help": "log metrics every N iterations"})
    report_to: str = field(default="none", metadata={"help": "none, or tensorboard (<output_dir>/runs) too"})
    seed: int = field(default=0, metadata={"help": "seed of prompt order and sampling"})
    resume: bool = field(default=True, metadata={"help": RESUME_HELP})
    extend: bool = field(default=False, metadata={"help": EXTEND_HELP})

    def __post_init__(self) -> None:
        check_field_types(self)
        if not self.policy:
            raise ValueError("policy: required, a checkpoint directory")
        spec = parse_reward_spec(self.reward, self.helpfulness_rm, self.safety_rm)
        if not self.shared_value_head and not self.value_model and "model" not in spec.sources.get("helpfulness", {}):
            raise ValueError(
                "value_model: required when the reward has no helpfulness reward model to start it from (or "
                "shared_value_head: true)"
            )
        require_source(self.prompts, "prompts", "a JSONL file of {id, prompt, is_safety} prompts")
        check_ranges(
            self,
            positive=("num_iterations", "batch_size", "mini_batch_size", "ppo_epochs", "response_length", "save_steps",
                      "logging_steps", "forward_batch_size", "world_prompts", "lr", "cliprange", "cliprange_value"),
            non_negative=("kl_coef", "vf_coef", "weight_decay", "max_grad_norm", "save_total_limit",
                          "logits_chunk_tokens"),
            fraction=("gamma", "lam", "safety_threshold", "adam_beta1", "adam_beta2"),
        )  # fmt: skip
        check_decode(self.decode, sharded=self.fsdp)
        if self.guard_action not in ("warn", "stop"):
            raise ValueError(f"guard_action: expected 'warn' or 'stop', got {self.guard_action!r}")
        for name in ("kl_target", "guard_max_kl"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.guard_keep_best and not self.guard_judge:
            raise ValueError("guard_keep_best: needs guard_judge, the judge whose best iteration is kept")
        if self.guard_window < 2:
            raise ValueError(f"guard_window: at least 2 iterations to see a trend, got {self.guard_window}")
        if self.guard_judge not in (None, "gold"):
            if self.guard_judge not in spec.sources:
                raise ValueError(f"guard_judge: {self.guard_judge!r} is not a source of the reward spec "
                                 f"({sorted(spec.sources)}) nor 'gold'")  # fmt: skip
            if spec.weight(self.guard_judge):
                raise ValueError(f"guard_judge: {self.guard_judge!r} is optimised (weight "
                                 f"{spec.weight(self.guard_judge)}); a held-out judge has weight 0")  # fmt: skip
        if self.reward_baseline not in ("batch", "prompt"):
            raise ValueError(f"reward_baseline: expected 'batch' or 'prompt', got {self.reward_baseline!r}")
        if self.samples_per_prompt < 1 or self.batch_size % self.samples_per_prompt:
            raise ValueError(f"samples_per_prompt: expected a divisor of batch_size {self.batch_size}, got "
                             f"{self.samples_per_prompt}")  # fmt: skip
        if self.reward_baseline == "prompt" and self.samples_per_prompt < 2:
            raise ValueError("reward_baseline: 'prompt' compares each answer with the other answers to its prompt; "
                             "it needs samples_per_prompt >= 2")  # fmt: skip
        if self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"mini_batch_size: {self.mini_batch_size} does not divide batch_size {self.batch_size}; "
                "each iteration takes batch_size / mini_batch_size gradient steps"
            )
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision: expected no, bf16 or fp16, got {self.mixed_precision!r}")
        self.lora = parse_lora_setting(self.lora)
        if self.shared_value_head and self.value_model:
            raise ValueError("value_model: not used with shared_value_head (the value head is on the policy)")
        if self.report_to not in ("none", "tensorboard"):
            raise ValueError(f"report_to: expected none or tensorboard, got {self.report_to!r}")
        if self.fsdp and self.mixed_precision == "fp16":
            raise ValueError("fsdp: shards the trained models in fp32 or bf16; not with mixed_precision fp16 (yet)")


# ---- the math, as functions of tensors ---------------------------------------------------------------------


def response_mask(responses: torch.Tensor, eos_token_id: int | Sequence[int]) -> torch.Tensor:
    """(B, T) bool: the tokens of each response up to and including its first `eos` (all, if it has none);
    `eos_token_id` is one id or the ids that each end an answer (`align.data.answer_end_token_ids`)."""
    is_eos = torch.isin(responses, torch.tensor(eos_token_id, device=responses.device).reshape(-1))
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # strictly after the first eos
    return ~after_eos


def used_columns(attention_mask: torch.Tensor, response_mask: torch.Tensor) -> tuple[int, int]:
    """The columns a batch of rows needs: from the first column any row attends (left padding shared by every
    row is cut) to the end of the longest response (positions after every response's end are cut). Returns
    `(start, response_width)`: the rows' tensors are `[:, start : prompt_width + response_width]`."""
    start = int(attention_mask.any(dim=0).long().argmax())
    ends = response_mask.any(dim=0).nonzero()
    return start, int(ends.max()) + 1 if len(ends) else 1


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) over response tokens; returns (advantages,
    returns), both (B, T) and zero where `mask` is false. Values after a response's end count as 0."""
    mask = mask.float()
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]  # nothing flows back from past the end
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor | float | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is true; `count` replaces the number of such entries (e.g. a count over
    every process, when this process holds only part of the mini-batch)."""
    mask = mask.float()
    count = mask.sum().clamp(min=1) if count is None else count
    return (values * mask).sum() / count


def ppo_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
    token_count: torch.Tensor | float | None = None,
) -> dict[str, torch.Tensor]:
    """The clipped surrogate and the clipped value loss of one mini-batch, means over response tokens (divided
    by `token_count` instead of this batch's own token count when given).

    policy loss: mean max(-A * r, -A * clip(r, 1 - eps, 1 + eps)) with r = exp(logp - logp_old);
    value loss: 0.5 * mean max((V - R)^2, (clip(V, V_old - eps_v, V_old + eps_v) - R)^2).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    value_unclipped, value_clipped = (values - returns) ** 2, (values_clipped - returns) ** 2
    log_ratio = logprobs - old_logprobs
    return {
        "policy_loss": masked_mean(torch.maximum(unclipped, clipped), mask, token_count),
        "value_loss": 0.5 * masked_mean(torch.maximum(value_unclipped, value_clipped), mask, token_count),
        "clipfrac": masked_mean((clipped > unclipped).float(), mask, token_count),
        "value_clipfrac": masked_mean((value_clipped > value_unclipped).float(), mask, token_count),
        "approxkl": 0.5 * masked_mean(log_ratio**2, mask, token_count),
        "ratio": masked_mean(ratio, mask, token_count),
    }


# ---- models ------------------------------------------------------------------------------------------------


def response_logprobs(
    causal_lm: torch.nn.Module,
    hidden: torch.Tensor,
    responses: torch.Tensor,
    temperature: float,
    chunk_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p and entropy (B, W) of the W response tokens that end the rows of `hidden` (B, T, C): position t
    predicts token t + 1, so the response's tokens are predicted by the positions just before them."""
    width = responses.shape[1]
    return token_logprobs_and_entropy(causal_lm, hidden[:, -width - 1 : -1], responses, temperature, chunk_tokens)


class PolicyWithValues(torch.nn.Module):
    """What PPO's update runs on: the policy's log-probs and entropies of the responses, and a value per position.
    `PolicyAndValue` reads the values from a value model, `PolicyWithValueHead` from a head on the policy."""

    policy: torch.nn.Module

    def causal_lm(self) -> torch.nn.Module:
        """The policy's transformers model, trunk and LM head (under LoRA: the base model, adapters in)."""
        return base_model(self.policy)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        responses: torch.Tensor,
        temperature: float = 1.0,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The policy's log-probs and entropies of the `responses` (B, W) that end the rows, and the value at
        every position (B, T); the vocabulary logits are computed `chunk_tokens` positions at a time."""
        causal_lm = self.causal_lm()
        hidden = final_hidden_states(causal_lm, input_ids, attention_mask)
        logprobs, entropy = response_logprobs(causal_lm, hidden, responses, temperature, chunk_tokens)
        return logprobs, entropy, self.values_given(hidden, input_ids, attention_mask)

    def values_given(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The values (B, T) of a forward whose policy hidden states are `hidden`."""
        raise NotImplementedError


class PolicyAndValue(PolicyWithValues):
    """The two trained models under one module, so accelerate wraps (DDP / FSDP) and optimizes them together."""

    def __init__(self, policy: torch.nn.Module, value_model: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    def values_given(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.values(input_ids, attention_mask)  # the value model runs its own trunk

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The value head read at every position (B, T), not only at the last token as a reward model does."""
        hidden = final_hidden_states(self.value_model, input_ids, attention_mask)
        return score_head(self.value_model)(hidden)[..., 0].float()


class PolicyWithValueHead(PolicyWithValues):
    """The policy with a linear value head on its own last hidden state (`shared_value_head`): one trunk serves
    both, as in TRL's former `AutoModelForCausalLMWithValueHead`, so each mini-batch runs one forward and one
    backward instead of two. Not the paper's setup (a separate value model initialised from the helpfulness
    reward model); the head starts at zero, so the first values are 0."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = torch.nn.Linear(policy.config.hidden_size, 1, bias=False)
        torch.nn.init.zeros_(self.value_head.weight)

    def values_given(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.value_head(hidden)[..., 0].float()

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The value head read at every position (B, T)."""
        return self.values_given(final_hidden_states(self.causal_lm(), input_ids, attention_mask), input_ids,
                                 attention_mask)  # fmt: skip

    @contextlib.contextmanager
    def values_while_generating(self) -> Iterator[list[torch.Tensor]]:
        """Within the block, each forward of the policy (each step of `generate`) appends the value of its last
        position (B,) to the yielded list: a T-token response's T steps give the values of the positions that
        predict its tokens, read from the hidden states generate computes anyway (no forward of their own)."""
        values: list[torch.Tensor] = []

        def record(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            values.append(self.value_head(output[:, -1])[..., 0].float())

        hook = final_norm(self.causal_lm()).register_forward_hook(record)
        try:
            yield values
        finally:
            hook.remove()


@dataclass
class Rollout:
    """One batch of experience on this process: prompts, sampled responses and what PPO needs of them."""

    input_ids: torch.Tensor  # (B, P + T) left-padded prompt then response
    attention_mask: torch.Tensor  # (B, P + T)
    mask: torch.Tensor  # (B, T) response tokens
    logprobs: torch.Tensor  # (B, T) under the policy that sampled them
    ref_logprobs: torch.Tensor  # (B, T) under pi_0
    values: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B, T)
    returns: torch.Tensor  # (B, T)


class PPOTrainer:
    """PPO for a policy, with a frozen reference, a value model and the two frozen reward models (§7).

    Use `PPOTrainer.from_config(config)` to load every model from its checkpoint, then `train()`.
    """

    def __init__(
        self,
        config: PPOConfig,
        policy: torch.nn.Module,
        reference: torch.nn.Module | None,
        value_model: torch.nn.Module | None,
        reward: RewardScorer,
        tokenizer: Any,
        prompts: Sequence[dict[str, Any]],
        gold_scorer: GoldScorer | None = None,
        accelerator: Accelerator | None = None,
    ) -> None:
        self.config = config
        self.accelerator = accelerator or Accelerator(
            cpu=not torch.cuda.is_available(), mixed_precision=device_precision(config.mixed_precision)
        )
        processes = self.accelerator.num_processes
        if config.batch_size % processes:
            raise ValueError(f"batch_size: {config.batch_size} is not divisible by the {processes} processes")
        if reference is None and not isinstance(policy, PeftModel):
            raise ValueError("reference: required unless the policy is trained with LoRA (adapters disabled = pi_0)")
        if not prompts:
            raise ValueError("prompts: no prompts to train on")
        check_prompt_lengths(tokenizer, prompts, policy.config.max_position_embeddings, config.response_length)
        self.tokenizer = tokenizer
        self.stop_ids = answer_end_token_ids(tokenizer)  # eos and the chat template's end of an answer
        self.resumed_from: int | None = None  # the iteration of the checkpoint loaded, if any
        self.prompts = list(prompts)
        self.gold_scorer = gold_scorer
        if config.guard_judge == "gold" and gold_scorer is None:
            raise ValueError("guard_judge: 'gold' needs the world's prompts (their gold scorer); name a reward "
                             "source of weight 0 as the held-out judge instead")  # fmt: skip
        self.kl_coef = config.kl_coef  # steered by the adaptive controller when kl_target is set
        self.kl_controller = (
            AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon) if config.kl_target else None
        )
        self.guard = (
            RewardHackingGuard(config.guard_window, config.guard_max_kl)
            if config.guard_judge or config.guard_max_kl
            else None
        )
        self.stopped_by_guard: str | None = None
        self.best: dict[str, float] = {}  # the end of the window with the best mean judge score (guard_keep_best)
        device = self.accelerator.device
        self.reference = reference.to(device).eval() if reference is not None else None
        self.reward = reward
        # (model, its name when it is a causal LM: run through its trunk and LM head, each its own FSDP unit)
        frozen_models = [(self.reference, "reference"), *((m, None) for m in reward.models()),
                         *((m, "likelihood model") for m in reward.likelihood_models())]  # fmt: skip
        for frozen, causal_lm_name in frozen_models:
            if frozen is not None:
                frozen.to(device).eval().requires_grad_(False)
                if config.shard_frozen:
                    roots = causal_lm_parts(frozen, causal_lm_name) if causal_lm_name else None
                    shard_model(frozen, roots=roots, mixed_precision=config.mixed_precision)
        if (value_model is None) != config.shared_value_head:
            raise ValueError("value_model: give one, or None with shared_value_head (a head on the policy's trunk)")
        model = PolicyWithValueHead(policy) if value_model is None else PolicyAndValue(policy, value_model)
        if config.gradient_checkpointing:  # only in training mode: rollouts keep their KV cache
            for trained in (policy, value_model):
                if trained is not None:
                    trained.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        # With `fsdp`, the trained pair is sharded here rather than by accelerate (which shards nothing on CPU and
        # whose FSDP wrapper would hide the policy from generate). Each module a forward is run on is a unit: the
        # policy (generate), the value model's trunk and score head (`PolicyAndValue.values`); with a shared value
        # head or LoRA, the policy's trunk and its head (run one by one by `PolicyWithValueHead`, and by peft's
        # wrappers, which have no forward of their own to shard) and the value head. LoRA's adapters are sharded
        # with the layers they belong to.
        self.sharded = config.fsdp and sharding_active()
        if self.sharded:
            model.to(device)
            precision = config.mixed_precision
            causal_lm = base_model(policy)
            parts = causal_lm_parts(causal_lm, "policy")
            if value_model is None:
                shard_model(causal_lm, roots=[*parts, model.value_head], mixed_precision=precision)
            else:
                shard_model(causal_lm, roots=parts, mixed_precision=precision)
                value_parts = [decoder_trunk(value_model), score_head(value_model)]
                shard_model(value_model, roots=value_parts, mixed_precision=precision)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.lr,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
        )
        self.model, self.optimizer = (model, optimizer) if self.sharded else self.accelerator.prepare(model, optimizer)
        self.iteration = 0
        self.episodes = 0
        self.output_dir = Path(config.output_dir)
        self.metrics = MetricsWriter(
            self.output_dir / METRICS_FILE,
            enabled=self.accelerator.is_main_process,
            tensorboard_dir=str(self.output_dir / "runs") if config.report_to == "tensorboard" else None,
        )

    # -- construction from checkpoints ---------------------------------------------------------------------

    @classmethod
    @releases_its_folder_on_error
    def from_config(
        cls, config: PPOConfig, prompts: Sequence[dict[str, Any]], gold_scorer: GoldScorer | None = None
    ) -> PPOTrainer:
        """Load the models named by `config` (resuming the trained ones from the last checkpoint, if any)."""
        spec = parse_reward_spec(config.reward, config.helpfulness_rm, config.safety_rm)
        paths = {"policy": require_model_dir(config.policy, "policy")}
        paths["reference"] = require_model_dir(config.reference or paths["policy"], "reference")
        for name, path in spec.models().items():
            require_reward_model_dir(path, spec.where(name))
        tokenizer = load_tokenizer(paths["policy"])
        if not config.shared_value_head:
            option = "value_model" if config.value_model else "value_model (the helpfulness reward model)"
            paths["value_model"] = require_model_dir(config.value_model or spec.models()["helpfulness"], option)
            check_same_tokenizer(tokenizer, paths["value_model"], option)
        for name, path in paths.items():
            check_vocabulary(tokenizer, path, name)
        accelerator = Accelerator(
            cpu=not torch.cuda.is_available(), mixed_precision=device_precision(config.mixed_precision)
        )
        if accelerator.is_main_process:
            acquire_run_lock(config.output_dir)  # a second run on the folder stops here, before loading models
        checkpoint = resumable_checkpoint(config.output_dir, config)
        policy = load_causal_lm(paths["policy"], "policy")
        policy.generation_config.pad_token_id = tokenizer.pad_token_id
        if config.lora is not None:
            if checkpoint:
                policy = PeftModel.from_pretrained(policy, checkpoint / "policy", is_trainable=True)
            else:
                with torch.random.fork_rng():  # the adapters' random init is the run's, not the process's state
                    torch.manual_seed(config.seed)
                    policy = get_peft_model(policy, lora_config(config.lora))
            reference = None if config.reference is None else load_causal_lm(paths["reference"], "reference")
        else:
            if checkpoint:
                policy = load_causal_lm(checkpoint / "policy", "policy")
            reference = load_causal_lm(paths["reference"], "reference")
        value_model = (
            None
            if config.shared_value_head
            else load_sequence_classifier(
                checkpoint / "value_model" if checkpoint else paths["value_model"], "value_model", num_labels=1
            )
        )
        reward = RewardScorer.load(
            spec, accelerator.device, config.forward_batch_size, config.safety_threshold, fallback_tokenizer=tokenizer
        )
        trainer = cls(
            config,
            policy,
            reference,
            value_model,
            reward,
            tokenizer,
            prompts,
            gold_scorer,
            accelerator,
        )
        needed = checkpoint_bytes(trainer.model)  # checked, with the rest, before anything is written
        prepare_run(config.output_dir, config, is_main=accelerator.is_main_process, needed_bytes=needed)
        accelerator.wait_for_everyone()
        if checkpoint:
            trainer.load_state(checkpoint)
        return trainer

    # -- one iteration ---------------------------------------------------------------------------------------

    def batch_prompts(self, iteration: int) -> list[dict[str, Any]]:
        """This process's share of the prompts of `iteration`; each pass over the prompts is a seeded shuffle.
        With `samples_per_prompt` k, batch positions k*g ... k*g + k - 1 hold the same prompt (group g)."""
        k = self.config.samples_per_prompt
        size, count = self.config.batch_size // k, len(self.prompts)
        chosen = []
        for position in range(iteration * size, (iteration + 1) * size):
            epoch, index = divmod(position, count)
            order = list(range(count))
            random.Random(f"{self.config.seed}-{epoch}").shuffle(order)
            chosen.append(order[index])
        return [self.prompts[chosen[position // k]] for position in self.local_positions()]

    def sequence_rewards(self, reward: torch.Tensor) -> torch.Tensor:
        """This process's rows of the reward PPO optimises, from every process's: whitened over the batch, or, with
        `reward_baseline: prompt`, minus the mean reward of the same prompt's answers, scaled by the batch's std
        (the baseline of RLOO and GRPO: only how an answer compares with its prompt's other answers counts, not how
        hard the prompt is)."""
        processes, rank, local = self.accelerator.num_processes, self.accelerator.process_index, len(reward)
        gathered = self.accelerator.gather(reward).cpu()  # process 0's rows, then process 1's, ...
        if self.config.reward_baseline == "prompt":
            k, batch = self.config.samples_per_prompt, self.config.batch_size
            # The batch position of each gathered row (process r holds positions r, r + P, ...), and its prompt.
            groups = torch.cat([torch.arange(r, batch, processes) for r in range(processes)]) // k
            sums = torch.zeros(batch // k).index_add_(0, groups, gathered.float())
            gathered = gathered - (sums / k)[groups]
        return whiten(gathered)[rank * local : (rank + 1) * local].to(reward.device)

    def local_positions(self) -> range:
        """The positions in the batch of this process's rows: rank, rank + P, rank + 2P, ..."""
        return range(self.accelerator.process_index, self.config.batch_size, self.accelerator.num_processes)

    def sum_across_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over every process (itself on one process)."""
        return self.accelerator.reduce(tensor, reduction="sum")

    @torch.no_grad()
    def rollout(self, records: list[dict[str, Any]], timings: dict[str, float]) -> tuple[Rollout, dict[str, Any]]:
        """Sample, score and compute advantages for this process's prompts."""
        config, tokenizer = self.config, self.tokenizer
        model = self.accelerator.unwrap_model(self.model)
        started = time.perf_counter()
        tokenizer.padding_side = "left"
        prompts = tokenizer(
            chat_prompt_texts(tokenizer, [r["prompt"] for r in records]),
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(self.accelerator.device)
        # Each row samples from a seed of its iteration and batch position, so the batch's answers do not depend
        # on the number of processes (nor on which rows share a generate call).
        positions = list(self.local_positions())[: len(records)]
        row_seeds = [zlib.crc32(f"{config.seed}:{self.iteration}:{position}".encode()) for position in positions]
        chunks, logprob_chunks, value_chunks = [], [], []
        shared_trunk = isinstance(model, PolicyWithValueHead)
        model.policy.eval()
        for start in range(0, len(records), config.forward_batch_size):
            rows = slice(start, start + config.forward_batch_size)
            # A value head on the policy reads its values off the generation steps; a value model needs a forward.
            step_rows: list[torch.Tensor] = []
            with model.values_while_generating() if shared_trunk else contextlib.nullcontext([]) as step_values:
                new, sampled_logprobs = sample_tokens(
                    model.policy,
                    prompts["input_ids"][rows],
                    prompts["attention_mask"][rows],
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=self.stop_ids,
                    max_new_tokens=config.response_length,
                    temperature=config.temperature,
                    top_p=config.top_p,
                    row_seeds=row_seeds[rows],
                    output_logprobs=True,
                    # a sharded policy's forwards are collectives: every process steps until all are done
                    synced_gpus=self.sharded,
                    decode=config.decode,
                    step_rows=step_rows,
                )
            # The sampling policy's log-probs come from the logits of each generation step (a forward of the
            # policy saved), reduced at each step: no (rows, T, vocab) tensor is held.
            padding = config.response_length - new.shape[1]
            chunks.append(F.pad(new, (0, padding), value=tokenizer.pad_token_id))
            logprob_chunks.append(F.pad(sampled_logprobs, (0, padding)))
            if shared_trunk:
                # Step t's forward ran the rows still going (finished rows leave the batch; -1 marks a finished
                # row that still steps with other processes): its values go to those rows' position t.
                values = torch.zeros_like(new, dtype=torch.float)
                for t, (rows_t, values_t) in enumerate(zip(step_rows, step_values)):
                    live = rows_t >= 0
                    values[rows_t[live], t] = values_t[live]
                value_chunks.append(F.pad(values, (0, padding)))
        responses = torch.cat(chunks)
        mask = response_mask(responses, self.stop_ids)
        responses = responses.masked_fill(~mask, tokenizer.pad_token_id)
        # Past a response's end the logits are of padding; 0 keeps the update's ratio there finite (it is masked).
        logprobs = torch.cat(logprob_chunks).masked_fill(~mask, 0.0)
        input_ids = torch.cat([prompts["input_ids"], responses], dim=1)
        attention_mask = torch.cat([prompts["attention_mask"], mask.long()], dim=1)
        timings["time/generation"] = time.perf_counter() - started

        started = time.perf_counter()
        ref_logprobs, values = self.forward_no_grad(input_ids, attention_mask, responses, with_values=not shared_trunk)
        values = torch.cat(value_chunks) if shared_trunk else values
        answers = [a.strip() for a in tokenizer.batch_decode(responses, skip_special_tokens=True)]
        messages = [r["prompt"] for r in records]
        scores = self.reward.scores(messages, answers)  # each source with its own tokenizer and template
        is_safety = torch.tensor([bool(r.get("is_safety", False)) for r in records])
        reward = self.reward.reward(scores, is_safety)  # R_c under the Llama 2 gate
        # Whitening is over the whole batch (every process's rows), so rewards share one scale.
        sequence_reward = self.sequence_rewards(self.reward.optimised(reward).to(logprobs.device))
        timings["time/scoring"] = time.perf_counter() - started

        kl = (logprobs - ref_logprobs) * mask
        rewards = -self.kl_coef * kl
        last = mask.long().sum(dim=1) - 1  # the index of each response's last token
        rewards[torch.arange(len(records)), last] += sequence_reward
        advantages, returns = compute_gae(rewards, values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = whiten(advantages, mask, sum_across=self.sum_across_processes) * mask
        stats = {
            "objective/kl": kl.sum(1).mean().item(),
            "objective/entropy": (-logprobs * mask).sum(1).mean().item(),
            "objective/non_score_reward": rewards.sum(1).mean().item() - sequence_reward.mean().item(),
            "objective/rlhf_reward": rewards.sum(1).mean().item(),
            "objective/scores": reward.mean().item(),
            **{f"objective/{name}_score": value.mean().item() for name, value in self.reward.logged(scores).items()},
            "val/num_eos_tokens": torch.isin(responses, torch.tensor(self.stop_ids, device=responses.device))
            .sum()
            .item(),
            "val/response_length": mask.float().sum(1).mean().item(),
        }
        if self.gold_scorer is not None:
            stats["objective/gold"] = sum(self.gold_scorer(r, a) for r, a in zip(records, answers)) / len(records)
        rollout = Rollout(input_ids, attention_mask, mask, logprobs, ref_logprobs, values, advantages, returns)
        return rollout, stats

    def forward_no_grad(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, responses: torch.Tensor, with_values: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs of the responses under pi_0, and (`with_values`) the value of each response position."""
        model = self.accelerator.unwrap_model(self.model)
        width = responses.shape[1]
        # pi_0 is the frozen reference, or the policy with its LoRA adapters disabled.
        reference = self.reference if self.reference is not None else model.causal_lm()
        ref_logprobs, value_rows = [], []
        prompt_width = input_ids.shape[1] - width
        for start in range(0, len(input_ids), self.config.forward_batch_size):
            rows = slice(start, start + self.config.forward_batch_size)
            # Padding every row of the chunk has (left of the prompts, right of the responses) is not computed.
            first, used = used_columns(attention_mask[rows], attention_mask[rows, prompt_width:].bool())
            ids, attention = (
                input_ids[rows, first : prompt_width + used],
                attention_mask[rows, first : prompt_width + used],
            )
            with contextlib.nullcontext() if self.reference is not None else model.policy.disable_adapter():
                # Only the positions that predict response tokens need the vocabulary projection (the prompt's
                # would be most of a small model's forward), and it runs `logits_chunk_tokens` at a time.
                hidden = final_hidden_states(reference, ids, attention)
                logprobs, _ = response_logprobs(
                    reference, hidden, responses[rows, :used], self.config.temperature, self.config.logits_chunk_tokens
                )
            ref_logprobs.append(F.pad(logprobs, (0, width - used)))
            if with_values:
                value_rows.append(F.pad(model.values(ids, attention)[:, -used - 1 : -1], (0, width - used)))
        return torch.cat(ref_logprobs), torch.cat(value_rows) if with_values else None

    def update(self, rollout: Rollout, timings: dict[str, float]) -> dict[str, float]:
        """One gradient step per mini-batch, `ppo_epochs` passes over the batch."""
        config = self.config
        started = time.perf_counter()
        self.model.train()
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        local = len(rollout.input_ids)
        rollout = self.whole_batch(rollout)
        batch = len(rollout.input_ids)
        generator = torch.Generator().manual_seed(config.seed * 100_003 + self.iteration)
        totals: dict[str, list[float]] = {}
        prompt_width = rollout.input_ids.shape[1] - rollout.mask.shape[1]
        for _ in range(config.ppo_epochs):
            # Every process draws the same permutation of the whole batch and trains on an equal share of each
            # mini-batch (every process holds every row), with losses divided by the mini-batch's token count over
            # all processes: the gradient is the same whatever the number of processes, and so is the memory of
            # a process's forward (mini_batch_size / processes rows; align.plan's micro_batch_size).
            order = torch.randperm(batch, generator=generator)
            for start in range(0, batch, config.mini_batch_size):
                positions = order[start : start + config.mini_batch_size][rank::processes]
                # Batch position p was sampled by process p % P as its row p // P; the gathered batch is
                # process 0's rows, then process 1's, ...
                mine = ((positions % processes) * local + positions // processes).to(rollout.input_ids.device)
                # With fewer rows in a mini-batch than processes, a process with none still takes part in the
                # step, on a row weighted 0.
                rows = mine if len(mine) else torch.zeros(1, dtype=torch.long, device=rollout.input_ids.device)
                # Padding every row of the mini-batch has is not computed; past `used`, no row has a response
                # token, so the losses (masked there) are the same.
                first, used = used_columns(rollout.attention_mask[rows], rollout.mask[rows])
                columns = slice(first, prompt_width + used)
                row_mask = rollout.mask[rows, :used] & (len(mine) > 0)
                token_count = self.sum_across_processes(row_mask.sum().float()).clamp(min=1) / processes
                responses = rollout.input_ids[rows, prompt_width : prompt_width + used]
                logprobs, entropy, values = self.model(
                    rollout.input_ids[rows, columns],
                    rollout.attention_mask[rows, columns],
                    responses,
                    config.temperature,
                    config.logits_chunk_tokens,
                )
                losses = ppo_losses(
                    logprobs,
                    rollout.logprobs[rows, :used],
                    rollout.advantages[rows, :used],
                    values[:, -used - 1 : -1],
                    rollout.values[rows, :used],
                    rollout.returns[rows, :used],
                    row_mask,
                    config.cliprange,
                    config.cliprange_value,
                    token_count,
                )
                loss = losses["policy_loss"] + config.vf_coef * losses["value_loss"]
                self.accelerator.backward(loss)
                if config.max_grad_norm > 0:
                    self.clip_gradients(config.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
                entropy = masked_mean(entropy, row_mask, token_count)
                for name, value in {**losses, "entropy": entropy}.items():
                    totals.setdefault(name, []).append(value.item())
        timings["time/update"] = time.perf_counter() - started
        mean = {name: sum(values) / len(values) for name, values in totals.items()}
        return {
            "loss/policy_avg": mean["policy_loss"],
            "loss/value_avg": mean["value_loss"],
            "policy/clipfrac_avg": mean["clipfrac"],
            "val/clipfrac_avg": mean["value_clipfrac"],
            "policy/approxkl_avg": mean["approxkl"],
            "policy/entropy_avg": mean["entropy"],
            "val/ratio": mean["ratio"],
        }

    def whole_batch(self, rollout: Rollout) -> Rollout:
        """Every process's rows, on every process (prompts left-padded to the widest process's)."""
        if self.accelerator.num_processes == 1:
            return rollout
        pad_id = self.tokenizer.pad_token_id
        input_ids, attention_mask = (
            self.accelerator.gather(self.accelerator.pad_across_processes(t, dim=1, pad_index=value, pad_first=True))
            for t, value in ((rollout.input_ids, pad_id), (rollout.attention_mask, 0))
        )
        rest = {name: self.accelerator.gather(getattr(rollout, name)) for name in
                ("logprobs", "ref_logprobs", "values", "advantages", "returns")}  # fmt: skip
        mask = self.accelerator.gather(rollout.mask.long()).bool()  # gloo gathers no bool tensors
        return Rollout(input_ids, attention_mask, mask, **rest)

    def clip_gradients(self, max_norm: float) -> None:
        """Scale the gradients to a total norm of at most `max_norm`, the norm taken over every process's shard."""
        if not self.sharded:
            self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
            return
        # Every trained parameter is sharded (a DTensor): the squares of the local shards sum to the whole norm.
        gradients = [p.grad for p in self.model.parameters() if p.grad is not None]
        squares = sum(g.to_local().float().pow(2).sum() for g in gradients)
        norm = self.sum_across_processes(squares).sqrt()
        scale = min(1.0, max_norm / (norm.item() + 1e-6))  # torch.nn.utils.clip_grad_norm_'s coefficient
        for gradient in gradients:
            gradient.mul_(scale)

    def step(self) -> dict[str, float]:
        """One PPO iteration; returns its metrics (averaged over the processes)."""
        timings: dict[str, float] = {}
        records = self.batch_prompts(self.iteration)
        rollout, stats = self.rollout(records, timings)
        stats.update(self.update(rollout, timings))
        names = sorted(stats)
        averaged = self.accelerator.reduce(
            torch.tensor([float(stats[n]) for n in names], device=self.accelerator.device), reduction="mean"
        )
        metrics = dict(zip(names, averaged.tolist()))
        metrics["objective/kl_coef"] = self.kl_coef
        if self.kl_controller is not None:
            self.kl_coef = self.kl_controller.update(metrics["objective/kl"], self.config.batch_size)
        if self.guard is not None:
            judge = {"gold": "objective/gold"}.get(
                self.config.guard_judge, f"objective/{self.config.guard_judge}_score"
            )
            alarm = self.guard.observe(metrics["objective/scores"], metrics.get(judge), metrics["objective/kl"])
            judged = self.guard.judge_mean()
            if self.config.guard_keep_best and judged is not None and judged > self.best.get("judge_mean", -math.inf):
                self.best = {"iteration": self.iteration + 1, "judge_mean": judged, "window": self.guard.window}
                self.save_best()
            metrics["guard/alarm"] = float(alarm is not None)
            if judged is not None:
                metrics["guard/judge_mean"] = judged
            if alarm is not None:
                if self.accelerator.is_main_process:
                    print(f"[ppo] reward-hacking guard, iteration {self.iteration + 1}: {alarm}", flush=True)
                if self.config.guard_action == "stop":
                    self.stopped_by_guard = alarm
        self.iteration += 1
        self.episodes += self.config.batch_size
        total = sum(timings.values())
        metrics.update(timings)
        metrics.update(
            {"episode": self.episodes, "lr": self.config.lr, "eps": self.config.batch_size / total if total else 0.0}
        )
        return metrics

    # -- the loop, checkpoints -------------------------------------------------------------------------------

    @releases_its_folder_on_error
    def train(self) -> Path:
        """Run the remaining iterations, checkpointing every `save_steps`; saves and returns `output_dir/final`.
        A finished run (DONE.json) is not run again: its final model is returned (`extend: true` continues it)."""
        config = self.config
        if (done := finished_run(self.output_dir, config)) is not None:
            return done
        needed, what = checkpoint_bytes(self.model), "a checkpoint (policy, value model and optimizer state)"
        if self.accelerator.is_main_process:  # drop what a killed attempt logged after its last checkpoint
            mark_resume(self.output_dir / METRICS_FILE, self.resumed_from or 0)
        with naming_a_full_disk(self.output_dir, needed, what):
            final = self.run_iterations()
        self.accelerator.wait_for_everyone()
        return final

    def run_iterations(self) -> Path:
        """The loop of `train`: iterations with logging and checkpoints, then the final model and DONE.json."""
        config = self.config
        progress = tqdm(
            total=config.num_iterations,
            initial=self.iteration,
            desc="PPO",
            disable=not self.accelerator.is_local_main_process,
        )
        metrics: dict[str, float] = {}
        while self.iteration < config.num_iterations and self.stopped_by_guard is None:
            metrics = self.step()
            losses = metrics["loss/policy_avg"] + metrics["loss/value_avg"]  # averaged over the processes
            require_finite_training(self.model, self.iteration, losses, unit="iteration")
            last = self.iteration == config.num_iterations or self.stopped_by_guard is not None
            if self.iteration % config.logging_steps == 0 or last:
                self.metrics.write(self.iteration, metrics)
                progress.set_postfix(
                    {k.split("/")[-1]: round(metrics[k], 3) for k in ("objective/scores", "objective/kl")}
                )
            if self.iteration % config.save_steps == 0 or last:
                self.save_state()
            progress.update(1)
        progress.close()
        final = self.output_dir / "final"
        policy = gathered_model(self.accelerator.unwrap_model(self.model).policy)  # all processes, when sharded
        if self.accelerator.is_main_process:
            if isinstance(policy, PeftModel):
                policy = policy.merge_and_unload() if config.lora else policy
            save_pretrained_atomic(policy, self.tokenizer, final)
            mark_done(
                self.output_dir,
                final=str(final),
                data_sources={"prompts": describe_sources(self.config.prompts, self.config.world_seed)},
                iterations=self.iteration,
                episodes=self.episodes,
                processes=self.accelerator.num_processes,
                **{k: v for k, v in metrics.items() if k.startswith("objective/")},
                resume_points=resume_points(self.output_dir / METRICS_FILE),
                **({"stopped_by_guard": self.stopped_by_guard} if self.stopped_by_guard else {}),
                **({"best": {**self.best, "path": str(self.output_dir / "best")}} if self.best else {}),
            )
            release_run_lock(self.output_dir)
        return final

    def save_best(self) -> None:
        """`best/`: the policy as a checkpoint holds it (its adapters with LoRA) and the tokenizer, atomically."""
        self.accelerator.wait_for_everyone()
        policy = gathered_model(self.accelerator.unwrap_model(self.model).policy)  # all processes, when sharded
        if self.accelerator.is_main_process:
            save_pretrained_atomic(policy, self.tokenizer, self.output_dir / "best")
        self.accelerator.wait_for_everyone()

    def save_state(self) -> None:
        """`checkpoint-<iteration>/`: policy (or its adapters), value model (or head), optimizer, counters."""
        self.accelerator.wait_for_everyone()
        model = self.accelerator.unwrap_model(self.model)
        # Gathered on every process when sharded; saved in one layout, so a run resumes on any process count.
        policy = gathered_model(model.policy)
        shared_head = isinstance(model, PolicyWithValueHead)
        value = full_state_dict(model.value_head) if shared_head else gathered_model(model.value_model)
        optimizer_state = full_optimizer_state(self.model, self.optimizer)
        if self.accelerator.is_main_process:

            def write(path: Path) -> None:
                policy.save_pretrained(path / "policy")
                if shared_head:
                    save_file(value, path / VALUE_HEAD_FILE)
                else:
                    value.save_pretrained(path / "value_model")
                torch.save(optimizer_state, path / "optimizer.pt")
                state = {"iteration": self.iteration, "episodes": self.episodes, "kl_coef": self.kl_coef,
                         "guard": self.guard.state() if self.guard else [], "stopped_by_guard": self.stopped_by_guard,
                         "best": self.best}  # fmt: skip
                (path / TRAINER_STATE).write_text(json.dumps(state))  # last: marks the checkpoint complete

            write_directory_atomic(write, self.output_dir / f"checkpoint-{self.iteration}")
            rotate_checkpoints(self.output_dir, self.config.save_total_limit)
        self.accelerator.wait_for_everyone()

    def load_state(self, checkpoint: Path) -> None:
        """Restore the optimizer and counters of `checkpoint` (and a shared value head; the models' weights are
        loaded by `from_config`)."""
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
        self.resumed_from = state["iteration"]
        model = self.accelerator.unwrap_model(self.model)
        if isinstance(model, PolicyWithValueHead):
            # Read on the CPU ("cpu:0", accelerate's device on a CPU process group, is no device to safetensors);
            # loading copies it onto the head's device.
            load_full_state_dict(model.value_head, load_file(checkpoint / VALUE_HEAD_FILE, device="cpu"))
        optimizer_state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
        if all(isinstance(p, str) for group in optimizer_state["param_groups"] for p in group["params"]):
            load_optimizer_state(self.model, self.optimizer, optimizer_state)  # keyed by parameter name
        else:  # a checkpoint of an earlier align (parameters by position)
            self.optimizer.load_state_dict(optimizer_state)
        self.iteration, self.episodes = state["iteration"], state["episodes"]
        self.kl_coef = state.get("kl_coef", self.config.kl_coef)
        if self.kl_controller is not None:
            self.kl_controller.value = self.kl_coef
        if self.guard is not None:
            self.guard.load_state(state.get("guard", []))
        self.stopped_by_guard = state.get("stopped_by_guard")
        self.best = state.get("best", {})
