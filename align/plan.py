"""What a run will need per GPU, before it starts: parameters, gradients, optimizer state, activations, KV cache.

    align plan --preset 70b --stage ppo --gpus 64 --strategy fsdp --shard_frozen true
    align plan --preset 70b --stage ppo --gpus 64 --strategy zero3      # refused, with the first change that fits
    align plan --preset 7b --stage sft --gpus 8 --strategy ddp --micro_batch_size 2
    align plan --preset 7b --stage dpo --gpus 8 --strategy zero3 --micro_batch_size 2 --seq_length 2048
    python -m align.plan --preset 7b --stage sft --gpus 8          # the same, without the console script

`plan_memory(config)` returns a `MemoryPlan` (bytes per GPU by component and model) and raises `PlanError` for a
layout that cannot work: a global batch that processes x micro-batch does not divide, or a plan that does not fit
the stated GPUs (the message says what does). The accounting:

- Trainable model, mixed precision AdamW (Rajbhandari et al. 2020, "ZeRO", §3): 16 bytes per parameter, that is
  weights + gradients + AdamW's two moments (+ fp32 master weights when the weights are bf16): 2+2+12 in bf16,
  4+4+8 in fp32. `ddp` replicates all of it; `zero2` shards gradients and optimizer state over the processes;
  `zero3` and `fsdp` (full shard) shard the weights too. LoRA trains adapters only (their own 16 bytes each).
- Frozen models (PPO's reference and both reward models, rejection sampling's policy and reward models) hold
  weights only. `align` places them whole on every process today (docs/distributed.md); `--shard_frozen`
  plans the layout where they are sharded under `zero3` / `fsdp` like the trained ones.
- Activations: what autograd keeps for the backward pass of one micro-batch, counted from `align.modeling`'s
  own forward (per token and layer: the fp32 copies and outputs of both RMSNorms, q, k, v and the attention
  output with its log-sum-exp (flash attention: no T x T matrix; `--attention math`, torch's CPU path, keeps
  the probabilities), the o_proj input, and the four SwiGLU tensors); the logits, alive through the whole
  backward; and at the peak either the loss's tensors (log-softmax, a vocabulary-sized gradient) or one
  layer's backward workspace. With activation checkpointing each layer keeps its input only; at the peak two
  recomputed layers, the workspace and the head's tensors are alive (as measured). A bf16/fp16 run under `ddp`
  is autocast over fp32 weights (Trainer, accelerate): an fp32 residual stream, bf16 copies of each
  projection's input and of every weight. An fp32 model with grouped kv heads has no fused attention kernel on
  CUDA: its probabilities are counted.
- KV cache of rollouts (rejection sampling, PPO): 2 x layers x kv heads x head dim per token of every sequence
  generated at once.
PPO holds policy and value model (trained), reference and two reward models (frozen); with LoRA the reference is
the policy with its adapters off, with `shared_value_head` the value model is a head on the policy (one model
less each). `eval/bench/memory.py` checks these numbers against measured CPU runs and one H200's
(`eval/bench/README.md`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .modeling import AlignLlamaConfig

STAGES = ("pretrain", "sft", "reward_model", "rejection_sampling", "ppo", "dpo")
STRATEGIES = ("ddp", "zero2", "zero3", "fsdp")
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
TRAINABLE_BYTES_PER_PARAMETER = 16  # weights + gradients + AdamW moments (+ fp32 master copy): ZeRO §3
GIB = 1024**3


class PlanError(ValueError):
    """A layout that cannot run; the message names the setting and what would work."""


@dataclass
class PlanConfig:
    """A run to plan: model, stage, processes and batch shape (defaults: Llama 2 7B SFT on one 8-GPU node)."""

    preset: str = field(default="7b", metadata={"help": "model size (align.modeling.PRESETS)"})
    model: str | None = field(
        default=None,
        metadata={"help": "a model's config.json (or its folder) to plan instead of --preset: any Llama-shaped "
                          "decoder (Llama 3.x, Qwen2, Mistral); e.g. recipes/models/llama-3.1-8b/config.json"},
    )  # fmt: skip
    stage: str = field(default="sft", metadata={"help": f"one of {STAGES}"})
    gpus: int = field(default=8, metadata={"help": "processes in all (GPUs over every node)"})
    strategy: str = field(default="ddp", metadata={"help": f"one of {STRATEGIES}"})
    dtype: str = field(default="bf16", metadata={"help": "weights and activations: bf16, fp16 or fp32"})
    micro_batch_size: int = field(
        default=1, metadata={"help": "sequences per GPU and micro-step (DPO: pairs, each a chosen and a rejected row)"}
    )
    global_batch_size: int | None = field(default=None, metadata={"help": "sequences per optimizer step"})
    seq_length: int = field(default=4096, metadata={"help": "tokens per training sequence"})
    activation_checkpointing: bool = field(default=True, metadata={"help": "keep only each layer's input"})
    lora_rank: int = field(default=0, metadata={"help": "LoRA rank on the attention and MLP projections; 0 = off"})
    forward_batch_size: int = field(
        default=32,
        metadata={"help": "sequences generated at once per GPU: the RL stages generate in chunks of this many rows "
                          "(their forward_batch_size)"},
    )  # fmt: skip
    prompt_length: int = field(default=1024, metadata={"help": "prompt tokens of a rollout"})
    response_length: int = field(default=1024, metadata={"help": "generated tokens of a rollout"})
    attention: str = field(
        default="flash",
        metadata={"help": "flash (GPU kernels; an fp32 model with grouped kv heads has none and is planned as math) "
                          "or math (keeps T x T: torch's CPU path)"},
    )  # fmt: skip
    logits_chunk_tokens: int = field(
        default=1024,
        metadata={"help": "PPO: positions whose vocabulary logits are computed at a time (PPOConfig's); 0 = all"},
    )
    shard_frozen: bool = field(
        default=False,
        metadata={"help": "frozen models sharded over the GPUs (FSDP2, the RL stages' shard_frozen) instead of whole "
                          "on every GPU"},
    )  # fmt: skip
    shared_value_head: bool = field(
        default=False, metadata={"help": "PPO: a value head on the policy instead of a value model (PPOConfig's)"}
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "DPO: the reference's log-probs computed once before training, so no reference model is "
                          "held (DPOConfig's)"},
    )  # fmt: skip
    gpu_memory_gib: float = field(default=80.0, metadata={"help": "memory of one GPU"})
    headroom: float = field(default=0.1, metadata={"help": "share of GPU memory kept free (allocator, buffers)"})

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise PlanError(f"stage: expected one of {list(STAGES)}, got {self.stage!r}")
        if self.strategy not in STRATEGIES:
            raise PlanError(f"strategy: expected one of {list(STRATEGIES)}, got {self.strategy!r}")
        if self.dtype not in DTYPE_BYTES:
            raise PlanError(f"dtype: expected one of {list(DTYPE_BYTES)}, got {self.dtype!r}")
        for name in ("gpus", "micro_batch_size", "seq_length", "forward_batch_size", "response_length"):
            if getattr(self, name) <= 0:
                raise PlanError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.global_batch_size is not None and self.global_batch_size % (self.gpus * self.micro_batch_size):
            raise PlanError(
                f"global_batch_size {self.global_batch_size} is not divisible by gpus x micro_batch_size = "
                f"{self.gpus} x {self.micro_batch_size}; use a multiple of {self.gpus * self.micro_batch_size}"
            )
        if self.attention not in ("flash", "math"):
            raise PlanError(f"attention: expected 'flash' or 'math', got {self.attention!r}")
        if not 0 <= self.headroom < 1:
            raise PlanError(f"headroom: must be in [0, 1), got {self.headroom}")
        if not 0 < self.gpu_memory_gib < float("inf"):
            raise PlanError(f"gpu_memory_gib: must be a positive finite number, got {self.gpu_memory_gib}")
        if self.logits_chunk_tokens < 0:
            raise PlanError(f"logits_chunk_tokens: must be 0 (all at once) or positive, got {self.logits_chunk_tokens}")

    @property
    def model_name(self) -> str:
        """What the plan is of: the preset, or the config file's folder."""
        if self.model is None:
            return self.preset
        path = Path(self.model)
        return (path.parent if path.name == "config.json" else path).name or str(path)


def parameter_count(config: AlignLlamaConfig, head: str = "lm") -> int:
    """Parameters of the decoder with a next-token head ("lm") or a scalar reward head ("score")."""
    hidden, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    query = config.num_attention_heads * config.head_dim
    attention = hidden * (2 * query + 2 * kv)  # q, o: hidden x heads * head_dim; k, v: hidden x kv
    mlp = 3 * hidden * config.intermediate_size
    layers = config.num_hidden_layers * (attention + mlp + 2 * hidden)  # + two RMSNorm weights
    tied = head == "lm" and config.tie_word_embeddings  # the LM head is the embedding matrix
    head_size = 0 if tied else hidden * (config.vocab_size if head == "lm" else 1)
    return config.vocab_size * hidden + layers + hidden + head_size


def lora_parameter_count(config: AlignLlamaConfig, rank: int) -> int:
    """LoRA adapters (A: rank x in, B: out x rank) on q, k, v, o and the three MLP projections of every layer."""
    hidden, kv, inner = config.hidden_size, config.num_key_value_heads * config.head_dim, config.intermediate_size
    query = config.num_attention_heads * config.head_dim
    shapes = [(hidden, query), (hidden, kv), (hidden, kv), (query, hidden)] + [(hidden, inner)] * 2 + [(inner, hidden)]
    return config.num_hidden_layers * sum(rank * (fan_in + fan_out) for fan_in, fan_out in shapes)


def layer_activation_bytes(
    config: AlignLlamaConfig, dtype_bytes: int, seq_length: int = 0, attention: str = "flash", autocast: bool = False
) -> int:
    """Bytes autograd keeps per token for one decoder layer's backward (see the module docstring); the "math"
    attention kernel (torch's CPU path for grouped-query attention) also keeps the attention probabilities.
    Under `autocast` (fp32 weights, bf16/fp16 matmuls) the residual stream and the norms' outputs stay fp32, and
    each of the five projections that read a norm's output (q, k, v; gate, up) keeps its own low-precision copy."""
    hidden, kv, inner = config.hidden_size, config.num_key_value_heads * config.head_dim, config.intermediate_size
    norm_output_bytes = 4 if autocast else dtype_bytes
    norms = 2 * (4 * hidden + norm_output_bytes * hidden)  # fp32 input copy + normalized output, twice
    casts = 5 * dtype_bytes * hidden if autocast else 0
    attention_bytes = dtype_bytes * (3 * hidden + 2 * kv) + 4 * config.num_attention_heads  # q k v, out, o_proj in
    if attention == "math":
        attention_bytes += dtype_bytes * config.num_attention_heads * seq_length  # one row of probabilities
    mlp = 4 * dtype_bytes * inner  # gate, silu(gate), up, their product
    return norms + casts + attention_bytes + mlp


def backward_workspace_bytes(config: AlignLlamaConfig, dtype_bytes: int) -> int:
    """Bytes per token of the gradients in flight while one layer runs backward (SwiGLU's dominate: the
    product's, up's and gate's, and the hidden state's in and out)."""
    return dtype_bytes * (3 * config.intermediate_size + 2 * config.hidden_size)


# How a stage computes its language-model loss: the whole logits (transformers' loss: pretraining), TRL's fused
# LM head (SFT and rejection sampling's fine-tune: tiles of 4,096 tokens x 32,768 vocabulary entries), or
# align.logprobs' chunks (PPO, `logits_chunk_tokens` positions at a time). TRL's DPO takes the fused head too.
LOGITS = {"pretrain": "full", "sft": "fused", "rejection_sampling": "fused", "ppo": "chunked", "dpo": "fused"}
TRL_TILE_TOKENS, TRL_TILE_VOCAB = 4096, 32768
# Bytes per position and vocabulary entry of align.logprobs' chunk beyond the logits themselves: their fp32 copy
# divided by the temperature, the normaliser's temporaries and the softmax (recomputed in backward, with the
# gradient). Measured: 20 bytes in fp32 (eval/bench/vocab_memory.py).
CHUNK_EXTRA_BYTES = 16


def head_activation_bytes(config: AlignLlamaConfig, dtype_bytes: int, head: str = "lm", logits: str = "full") -> int:
    """Bytes per token at the head's backward: the final norm, and for a language-model loss computed on the
    whole logits those logits (returned to the caller, so alive through the whole backward), their fp32 copy
    when they are not fp32, the log-softmax and a vocabulary-sized gradient. Chunked logits cost a fixed
    amount per step instead (`logits_workspace_bytes`)."""
    final_norm = 4 * config.hidden_size + dtype_bytes * config.hidden_size
    if head != "lm" or logits != "full":
        return final_norm
    vocab = config.vocab_size
    return final_norm + dtype_bytes * vocab + (4 * vocab if dtype_bytes != 4 else 0) + 2 * 4 * vocab


def logits_workspace_bytes(
    config: AlignLlamaConfig, dtype_bytes: int, tokens: int, logits: str, chunk_tokens: int = 1024
) -> int:
    """Bytes of the vocabulary-sized tensors of a loss computed in pieces: TRL's fused head (GPU, Triton) holds a
    tile in the compute dtype and, in backward, its gradient (on a CPU its torch fallback holds about 8 tiles:
    eval/bench/vocab_memory.py); align.logprobs one chunk of `chunk_tokens` positions (all `tokens` when 0) of
    logits and `CHUNK_EXTRA_BYTES` more per entry."""
    if logits == "fused":
        return 2 * dtype_bytes * min(tokens, TRL_TILE_TOKENS) * min(config.vocab_size, TRL_TILE_VOCAB)
    if logits == "chunked":
        positions = tokens if chunk_tokens <= 0 else min(tokens, chunk_tokens)
        return (dtype_bytes + CHUNK_EXTRA_BYTES) * positions * config.vocab_size
    return 0


def activation_bytes(
    config: AlignLlamaConfig,
    batch_size: int,
    seq_length: int,
    dtype_bytes: int,
    checkpointing: bool,
    head: str,
    attention: str = "flash",
    logits: str = "full",
    chunk_tokens: int = 1024,
    autocast: bool = False,
) -> int:
    """Peak activation memory of one forward + backward of a micro-batch of `batch_size` x `seq_length` tokens,
    the loss computed on the whole logits, TRL's fused head or align.logprobs' chunks (`LOGITS`).

    `autocast`: fp32 weights with a bf16/fp16 forward under `torch.autocast`, as `Trainer`'s and accelerate's
    `bf16` run a model that is not sharded (`ddp`). The residual stream is then fp32, and every matmul keeps the
    low-precision copy of its weight for the backward: a second copy of the model's projections in `dtype_bytes`
    (measured on an H200: without it the plan read 22-35% low; eval/bench/memory.py)."""
    # torch's fused attention kernels on CUDA: flash needs bf16/fp16, and the memory-efficient one (fp32) does not
    # take grouped kv heads, so an fp32 model with them runs the math kernel (measured on an H200: the flash plan
    # read 0.32x of the step's activations at 8 x 1024 tokens).
    if dtype_bytes == 4 and config.num_key_value_heads < config.num_attention_heads:
        attention = "math"
    per_layer = layer_activation_bytes(config, dtype_bytes, seq_length, attention, autocast)
    workspace = backward_workspace_bytes(config, dtype_bytes)
    head_bytes = head_activation_bytes(config, dtype_bytes, head, logits)
    tokens = batch_size * seq_length
    chunk = logits_workspace_bytes(config, dtype_bytes, tokens, logits, chunk_tokens) if head == "lm" else 0
    weight_copies = 0
    if autocast:
        layer = layer_parameter_count(config) - 2 * config.hidden_size  # the projections, not the norms' weights
        head_weight = config.hidden_size * (config.vocab_size if head == "lm" else 1)
        layers_kept = 1 if checkpointing else config.num_hidden_layers  # recomputed one layer at a time
        weight_copies = dtype_bytes * (layers_kept * layer + head_weight)
    if checkpointing:
        # Each layer keeps its input. Measured (eval/bench/memory.py): at the peak two recomputed layers are alive
        # at once (torch frees a layer's recomputed tensors only after the next one is recomputed) together with
        # the backward workspace and the head's tensors.
        inputs = config.num_hidden_layers * (4 if autocast else dtype_bytes) * config.hidden_size
        per_token = inputs + 2 * per_layer + workspace + head_bytes
    else:  # the head's loss tensors are freed before the layers' backward needs its workspace
        per_token = config.num_hidden_layers * per_layer + max(head_bytes, workspace)
    return tokens * per_token + chunk + weight_copies


def kv_cache_bytes(config: AlignLlamaConfig, sequences: int, length: int, dtype_bytes: int) -> int:
    """Keys and values of every layer for `sequences` rows of `length` tokens."""
    return (
        2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * sequences * length * dtype_bytes
    )


@dataclass
class ModelRole:
    """One model a stage holds: its name, head and whether it is trained."""

    name: str
    head: str
    trained: bool


def stage_models(
    stage: str, lora: bool = False, shared_value_head: bool = False, precomputed_reference: bool = False
) -> list[ModelRole]:
    """The models a stage holds at once (docs/method.md §5-7); PPO's value model is a head on the policy (no model
    of its own) with `shared_value_head`. DPO's reference is the base under the adapters with LoRA, and not held
    at all when its log-probs are precomputed (TRL drops it)."""
    if stage in ("pretrain", "sft"):
        return [ModelRole("policy", "lm", True)]
    if stage == "dpo":
        no_reference = lora or precomputed_reference
        return [ModelRole("policy", "lm", True)] + ([] if no_reference else [ModelRole("reference", "lm", False)])
    if stage == "reward_model":
        return [ModelRole("reward model", "score", True)]
    rewards = [ModelRole("helpfulness RM", "score", False), ModelRole("safety RM", "score", False)]
    if stage == "rejection_sampling":
        return [ModelRole("policy", "lm", False), *rewards]
    roles = [ModelRole("policy", "lm", True)] + (
        [] if shared_value_head else [ModelRole("value model", "score", True)]
    )
    return roles + ([] if lora else [ModelRole("reference", "lm", False)]) + rewards


@dataclass
class MemoryPlan:
    """Bytes per GPU by component (`components`) and by model (`models`), and whether it fits."""

    config: PlanConfig
    components: dict[str, int]
    models: dict[str, int]
    parameters: dict[str, int]

    @property
    def total(self) -> int:
        """The peak: what is held throughout, plus the larger of the rollout and the update (`plan_memory`)."""
        c = self.components
        held = c["weights"] + c["gathered layers"] + c["optimizer state"]
        return int(held + max(c["gradients"] + c["activations"], c["kv cache"] + c["rollout logits"]))

    @property
    def budget(self) -> int:
        return int(self.config.gpu_memory_gib * GIB * (1 - self.config.headroom))

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    def table(self) -> str:
        """The plan as aligned text, GiB per GPU."""
        c = self.config
        checkpointing = f"activation checkpointing {'on' if c.activation_checkpointing else 'off'}"
        if c.stage in ("rejection_sampling", "ppo"):
            frozen = "frozen models sharded" if c.shard_frozen else "frozen models whole"
            shape = f"rollouts of {c.forward_batch_size} rows x {c.prompt_length} + {c.response_length} tokens"
            if c.stage == "ppo":
                shape += f", updates of {c.micro_batch_size} rows per GPU, {checkpointing}"
            if c.stage == "ppo":
                chunk = f"{c.logits_chunk_tokens} positions" if c.logits_chunk_tokens else "whole"
                shape += f", logits {chunk} at a time"
            lines = [f"{c.model_name} {c.stage} on {c.gpus} GPUs ({c.strategy}, {frozen}, {c.dtype}, {shape})"]
        else:
            rows = f"{c.micro_batch_size} pairs (2 rows each)" if c.stage == "dpo" else f"{c.micro_batch_size}"
            lines = [f"{c.model_name} {c.stage} on {c.gpus} GPUs ({c.strategy}, {c.dtype}, micro-batch "
                     f"{rows} x {c.seq_length} tokens, {checkpointing})"]  # fmt: skip
        lines += [f"  {name:24s} {count / 1e9:9.2f} B parameters" for name, count in self.parameters.items()]
        lines += [f"  {name:24s} {size / GIB:9.2f} GiB" for name, size in self.components.items()]
        if c.stage in ("rejection_sampling", "ppo"):
            lines.append(
                "  peak: weights + gathered layers + optimizer state + the larger of the update (gradients + "
                "activations) and the rollout (KV cache + logits)"
            )
        lines.append(f"  {'total per GPU':24s} {self.total / GIB:9.2f} GiB of {self.budget / GIB:.1f} usable")
        return "\n".join(lines)


def layer_parameter_count(config: AlignLlamaConfig) -> int:
    """Parameters of one decoder layer (what FSDP gathers at a time)."""
    hidden, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    query = config.num_attention_heads * config.head_dim
    return hidden * (2 * query + 2 * kv) + 3 * hidden * config.intermediate_size + 2 * hidden


def rollout_logits_bytes(
    config: AlignLlamaConfig, rows: int, length: int, response_length: int, dtype_bytes: int, chunk_tokens: int
) -> int:
    """PPO's rollout: each generation step's fp32 scores, their log-softmax and the sampling distribution (3 x 4
    bytes per row and vocabulary entry; the sampled tokens' log-probs are kept, not the logits), or, if larger,
    the reference's no-grad log-probs over the chunk's rows x `length` positions: `chunk_tokens` positions of
    logits at a time (all the response positions at once when 0)."""
    steps = 3 * 4 * rows * config.vocab_size
    positions = rows * response_length if chunk_tokens <= 0 else min(rows * length, chunk_tokens)
    return max(steps, (dtype_bytes + CHUNK_EXTRA_BYTES) * positions * config.vocab_size)


def plan_memory(
    config: PlanConfig, model_config: AlignLlamaConfig | None = None, check_fit: bool = True
) -> MemoryPlan:
    """Per-GPU memory of `config`'s stage; `PlanError` if it does not fit (unless `check_fit` is False).

    The RL stages alternate two phases, and the peak is the larger: the rollout (KV cache of a chunk of
    `forward_batch_size` rows, and PPO's logits of the chunk) and the update (gradients and activations);
    weights, gathered layers and optimizer state are held through both."""
    model_config = model_config or plan_model_config(config)
    dtype_bytes = DTYPE_BYTES[config.dtype]
    shards = config.gpus
    shard_trained = config.strategy in ("zero3", "fsdp")
    shard_states = config.strategy != "ddp"
    lora = config.lora_rank > 0
    components = {"weights": 0, "gathered layers": 0, "optimizer state": 0, "gradients": 0, "activations": 0,
                  "kv cache": 0, "rollout logits": 0}  # fmt: skip
    models, parameters = {}, {}
    roles = stage_models(config.stage, lora, config.shared_value_head, config.precompute_ref_log_probs)
    any_sharded = False
    for role in roles:
        count = parameter_count(model_config, role.head)
        parameters[role.name] = count
        # TRL prepares DPO's reference with the policy's engine: sharded under ZeRO-3 and FSDP, whole otherwise.
        follows_policy = role.trained or config.stage == "dpo"
        sharded = shards > 1 and (shard_trained if follows_policy else config.shard_frozen)
        any_sharded |= sharded
        weights = count * dtype_bytes / (shards if sharded else 1)
        model_bytes = weights
        components["weights"] += weights
        if role.trained:
            trained = lora_parameter_count(model_config, config.lora_rank) if lora else count
            # trained weights in their own precision are counted above (frozen base under LoRA), the rest here
            gradients = trained * dtype_bytes / (shards if shard_states else 1)
            optimizer = trained * (TRAINABLE_BYTES_PER_PARAMETER - 2 * dtype_bytes) / (shards if shard_states else 1)
            if lora:
                components["weights"] += trained * dtype_bytes
                model_bytes += trained * dtype_bytes
            components["gradients"] += gradients
            components["optimizer state"] += optimizer
            model_bytes += gradients + optimizer
        models[role.name] = int(model_bytes)
    if any_sharded:  # a sharded forward holds its root's weights (embeddings, head) and two layers whole (prefetch)
        layer = layer_parameter_count(model_config)
        root = parameter_count(model_config, "lm") - model_config.num_hidden_layers * layer
        components["gathered layers"] = (root + 2 * layer) * dtype_bytes
    rl_stage = config.stage in ("rejection_sampling", "ppo")
    length = config.prompt_length + config.response_length if rl_stage else config.seq_length
    trained_heads = [role.head for role in roles if role.trained]
    # DPO's micro-batch runs each pair's chosen and rejected answer in one forward: two rows a pair. Its reference
    # forward (no gradients) comes before the policy's and holds far less than the backward.
    rows = 2 * config.micro_batch_size if config.stage == "dpo" else config.micro_batch_size
    # Not sharded, a bf16/fp16 run keeps fp32 weights and casts them in the forward (torch.autocast); sharded ones
    # (DeepSpeed, FSDP) and LoRA's frozen base hold the weights in the low precision itself.
    autocast = dtype_bytes != 4 and config.strategy == "ddp" and not lora
    per_model = [
        activation_bytes(model_config, rows, length, dtype_bytes, config.activation_checkpointing,
                         head, config.attention, LOGITS.get(config.stage, "full"), config.logits_chunk_tokens,
                         autocast)
        for head in trained_heads
    ]  # fmt: skip
    # PPO's policy and value model run forward together and share one backward: both models' activations at once.
    components["activations"] = (sum(per_model) if config.stage == "ppo" else max(per_model)) if per_model else 0
    if rl_stage:
        components["kv cache"] = kv_cache_bytes(model_config, config.forward_batch_size, length, dtype_bytes)
    if config.stage == "ppo":
        components["rollout logits"] = rollout_logits_bytes(
            model_config, config.forward_batch_size, length, config.response_length, dtype_bytes,
            config.logits_chunk_tokens,
        )  # fmt: skip
    plan = MemoryPlan(config, {k: int(v) for k, v in components.items()}, models, parameters)
    if check_fit and not plan.fits:
        raise does_not_fit(plan, model_config)
    return plan


# The fields of a Hugging Face config that set a Llama-shaped decoder's memory (biases and norms are negligible).
SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "tie_word_embeddings", "max_position_embeddings")  # fmt: skip


def plan_model_config(config: PlanConfig) -> AlignLlamaConfig:
    """The shape to plan: `config.preset`, or the config.json `config.model` names (PlanError naming the file when
    it is not a decoder's config)."""
    if config.model is None:
        try:
            return AlignLlamaConfig.from_preset(config.preset)
        except ValueError as error:
            raise PlanError(str(error)) from None
    path = Path(config.model)
    path = path / "config.json" if path.is_dir() else path
    try:
        fields = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PlanError(f"model: cannot read {path} as a model's config.json ({error})") from None
    if not isinstance(fields, dict) or "hidden_size" not in fields:
        raise PlanError(f"model: {path} is not a decoder's config.json (no hidden_size)")
    fields = fields.get("text_config", fields)  # multimodal configs hold the language model's here
    try:
        return AlignLlamaConfig(**{name: fields[name] for name in SHAPE_FIELDS if fields.get(name) is not None})
    except ValueError as error:
        raise PlanError(f"model: {path}: {error}") from None


def does_not_fit(plan: MemoryPlan, model_config: AlignLlamaConfig) -> PlanError:
    """The error for a plan over the GPUs' memory, with the first change that fits."""
    config = plan.config
    return PlanError(
        f"{config.model_name} {config.stage} needs {plan.total / GIB:.1f} GiB per GPU under {config.strategy} on "
        f"{config.gpus} GPUs, over the {plan.budget / GIB:.1f} GiB usable of {config.gpu_memory_gib:g} GiB"
        f"{suggestion(config, model_config)}"
    )


def suggestion(config: PlanConfig, model_config: AlignLlamaConfig) -> str:
    """The first change that makes `config` fit, as text for an error message: sharded frozen models, a sharding
    strategy, smaller rollout chunks, DPO's precomputed reference, more GPUs (in that order: the cheapest first)."""

    def fits(**changes: object) -> bool:
        return plan_memory(_replace(config, **changes), model_config, check_fit=False).fits

    def flag(shard_frozen: bool) -> str:
        return " --shard_frozen true" if shard_frozen != config.shard_frozen else ""

    roles = stage_models(config.stage, config.lora_rank > 0, config.shared_value_head, config.precompute_ref_log_probs)
    has_frozen = config.stage != "dpo" and any(not role.trained for role in roles)  # DPO's follows the strategy
    frozen = [False, True] if has_frozen and not config.shard_frozen else [config.shard_frozen]
    # PPO shards its trained models with FSDP2 itself; DeepSpeed ZeRO-3 is not an engine it has (docs/distributed.md)
    strategies = [s for s in STRATEGIES[STRATEGIES.index(config.strategy) :] if config.stage != "ppo" or s != "zero3"]
    for shard_frozen in frozen:
        for strategy in strategies:
            changed = (strategy, shard_frozen) != (config.strategy, config.shard_frozen)
            if changed and fits(strategy=strategy, shard_frozen=shard_frozen):
                return f"; it fits with --strategy {strategy}{flag(shard_frozen)}"
    best = "fsdp" if STRATEGIES.index(config.strategy) < STRATEGIES.index("fsdp") else config.strategy
    shard_frozen = frozen[-1]
    if config.stage in ("rejection_sampling", "ppo"):
        rows = config.forward_batch_size
        while rows > 1:
            rows //= 2
            if fits(strategy=best, shard_frozen=shard_frozen, forward_batch_size=rows):
                return f"; it fits with --strategy {best}{flag(shard_frozen)} --forward_batch_size {rows}"
    if config.stage == "dpo" and not config.precompute_ref_log_probs and fits(strategy=best, precompute_ref_log_probs=True):
        return f"; it fits with --strategy {best} --precompute_ref_log_probs true (no reference model held)"
    gpus = config.gpus
    while gpus < 4096:
        gpus *= 2
        if fits(strategy=best, shard_frozen=shard_frozen, gpus=gpus):
            return f"; it fits on {gpus} GPUs with --strategy {best}{flag(shard_frozen)}"
    return "; shorten sequences or rollouts, or use LoRA"


def _replace(config: PlanConfig, **changes: object) -> PlanConfig:
    values = {**config.__dict__, **changes}
    if values["global_batch_size"] is not None and values["global_batch_size"] % (
        values["gpus"] * values["micro_batch_size"]
    ):
        values["global_batch_size"] = None  # a hypothetical layout: the batch is the user's to adjust
    return PlanConfig(**values)


def resident_bytes() -> int:
    """Resident memory of this process (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _return_free_memory_to_the_system() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement may read low
        pass


def activation_peak(step: Callable[[], None], device: Any) -> int:
    """Peak memory of `step()` above what was held before it: on CUDA the allocator's peak, on a CPU the kernel's
    peak resident memory (`resident_peak`)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        return torch.cuda.max_memory_allocated() - before
    settle_memory()  # else the previous step's freed blocks are reused unseen
    before = resident_bytes()
    return max(0, resident_peak(step) - before)


def settle_memory() -> None:
    """Collect garbage and hand glibc's free memory back to the system, so resident memory shows what is held."""
    gc.collect()
    _return_free_memory_to_the_system()


def resident_peak(step: Callable[[], None]) -> int:
    """The largest resident memory of this process while `step()` runs: the kernel's high-water mark, reset
    just before (Linux >= 4.0; exact however busy the cores are), else resident memory sampled every 0.2 ms
    (a sampler starved of CPU time misses short peaks and reads low)."""
    if _reset_peak_resident():
        step()
        return _peak_resident_bytes()
    peak, running = [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        step()
    finally:
        running[0] = False
        sampler.join()
    return peak[0]


def _reset_peak_resident() -> bool:
    """Set the kernel's peak resident memory of this process to its current resident memory (`clear_refs` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _peak_resident_bytes() > 0
    except (OSError, ValueError):
        return False


def _peak_resident_bytes() -> int:
    """The kernel's peak resident memory of this process (`VmHWM` in /proc/self/status), 0 where unknown."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_training_step(
    model: Any, batch_size: int, seq_length: int, checkpointing: bool, repeats: int = 3, autocast: Any = None
) -> dict[str, int]:
    """Measured bytes of one AdamW training step of `model` (a causal LM) on random tokens: weights, gradients
    and optimizer state read off the tensors, activations as the peak memory of forward + backward above what
    was held before it (CUDA: the allocator's peak; CPU: the kernel's peak resident memory, Linux only, which
    includes what glibc keeps of freed tensors and so moves by about +-10% from step to step; the largest of
    `repeats` steps). `autocast` (e.g. `torch.bfloat16`) runs the forward under `torch.autocast`, as
    `Trainer`'s `bf16=True` does: fp32 weights, bf16 matmuls.
    The plan's figures are checked against this (`eval/bench/memory.py`, `tests/test_plan.py`)."""
    import torch

    device = next(model.parameters()).device
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(model.config.vocab_size, (batch_size, seq_length), generator=generator).to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext():
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: the peak below is activations only

    step()  # allocates gradients and optimizer state
    activations = max(activation_peak(step, device) for _ in range(repeats))  # the largest: the least disturbed

    def tensor_bytes(tensors: Any) -> int:
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    return {
        "weights": tensor_bytes(model.parameters()),
        "gradients": tensor_bytes(p.grad for p in model.parameters()),
        "optimizer state": sum(tensor_bytes(state.values()) for state in optimizer.state.values()),
        "activations": activations,
    }


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`align plan` / `python -m align.plan`: print the plan; for a layout that cannot run, one error line and
    exit 2."""
    from .config import ConfigError, build_config, exit_with_error

    try:
        config = build_config(PlanConfig, argv, description=__doc__, prog=prog)
        model_config = plan_model_config(config)
        plan = plan_memory(config, model_config, check_fit=False)
        print(plan.table())
        if not plan.fits:
            raise does_not_fit(plan, model_config)
    except (ConfigError, PlanError) as error:
        exit_with_error(str(error), prog=prog or "align.plan")


if __name__ == "__main__":
    main(sys.argv[1:])
