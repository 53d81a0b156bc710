"""Best-of-K rejection sampling (docs/method.md §6): sample K answers per prompt, keep the one the reward models
like best.

Prompts are taken in waves: the K answers of every prompt of a wave are sampled together with the KV cache
(`align.generation.complete`, `generation_batch_size` rows per batch, prompts of similar length side by side,
finished answers leaving the batch), each answer from its own seed (derived from the run seed, the prompt's
id and the sample's index), so the kept answers do not depend on the batching nor on how prompts are split
across processes. Both reward models score every answer (`align.rewards.score`) and the gated reward of §7
picks the best: the safety score on safety prompts or when it is below the threshold, the helpfulness score
otherwise.

With `min_reward_gain` > 0 (the demo's rounds; 0, the paper's plain argmax, by default) the reward models' pick
must earn its place: it replaces the policy's most frequent answer among the K only when its reward is higher by
more than `min_reward_gain`. A reward model near chance on small differences (the paper's "negligibly better"
pairs, docs/method.md §5) gives the K answers nearly equal scores, and the argmax of nearly equal scores falls
on any *distinct* answer about equally often, so the policy's rare answers, mostly its wrong ones, are kept far
more often than it samples them, and fine-tuning on them teaches the errors (eval/experiments/rounds_compound.md,
tenth session). A clear preference (a refusal against an answer, a broken format) still wins.

Distributed with accelerate: process r takes every n-th prompt and appends each result, as soon as it has it,
to `shards/shard-r.jsonl` (one flushed line per prompt). A restarted run reads every shard, skips the prompts
already done (a line cut short by a kill is ignored), and the main process merges the shards into
`kept.jsonl` (written atomically) in prompt order; a prompt whose K answers are all empty keeps nothing. The
records are standard JSON: a score that is not a finite number (an overflowed reward model) is null.
Fine-tuning on the kept answers is the SFT stage's job; the recipe and the round orchestrator chain the two
(a stage never imports another).

With `shard_frozen`, the policy and the reward models are sharded over the processes (FSDP2, `align.sharding`)
instead of held whole by each: every forward is then a collective, so each process generates and scores as
many prompts as the busiest one (repeating one it discards) and generation steps until every process is done.
The kept answers are the same as unsharded, on any number of processes.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from .checkpoint import (
    check_vocabulary,
    finished_run,
    mark_done,
    prepare_run,
    release_run_lock,
    releases_its_folder_on_error,
    require_model_dir,
    require_reward_model_dir,
)
from .config import check_field_types, check_ranges
from .data import load_tokenizer
from .generation import DECODE_HELP, chat_prompt_texts, check_decode, complete, longest_first, sample_seeds
from .io import atomic_write_jsonl
from .modeling import load_causal_lm
from .prompts import PROMPTS_HELP, check_prompt_lengths, stage_prompts
from .reward_sources import REWARD_HELP, RewardScorer, parse_reward_spec
from .rewards import SAFETY_THRESHOLD, logit
from .sharding import SHARD_FROZEN_HELP, causal_lm_parts, shard_model, sharding_active
from .sources import describe_sources, require_source

MIN_REWARD_GAIN_HELP = (
    "keep the policy's most frequent answer among the K unless the best-rewarded one beats its reward by more than "
    "this (on min_reward_gain_scale; 0: always the best-rewarded, the paper's best-of-K)"
)
GAIN_SCALES = ("reward", "logit")
MIN_REWARD_GAIN_SCALE_HELP = (
    "what min_reward_gain is measured on: 'reward' (the reward itself; under the gate R_c, a probability) or 'logit' "
    "(logit(R_c), what PPO maximises: the same gain counts alike at any reward level; the gate only)"
)


@dataclass
class RejectionSamplingConfig:
    """Rejection-sampling settings (docs/method.md §6): K samples per prompt, temperature, the two reward models."""

    shipped_configs = "rejection_sampling"  # `--config NAME`: align/configs/rejection_sampling/NAME.yaml (not a field)

    policy: str = field(default="", metadata={"help": "checkpoint of the current policy (the chat model)"})
    helpfulness_rm: str = field(default="", metadata={"help": "helpfulness reward model checkpoint"})
    safety_rm: str = field(default="", metadata={"help": "safety reward model checkpoint"})
    reward: dict | str | None = field(default=None, metadata={"help": REWARD_HELP})
    output_dir: str = field(default="runs/rejection_sampling", metadata={"help": "run folder"})
    prompts: str | None = field(default=None, metadata={"help": PROMPTS_HELP})
    world_seed: int = field(default=0, metadata={"help": "seed of the synthetic world (prompts=world)"})
    world_prompts: int = field(default=200, metadata={"help": "train prompts drawn from the world"})
    world_prompt_seed: int = field(default=0, metadata={"help": "which world prompts (e.g. the round number)"})
    num_samples: int = field(default=8, metadata={"help": "K: answers sampled per prompt"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold"})
    max_new_tokens: int = field(default=64, metadata={"help": "longest answer in tokens"})
    min_reward_gain: float = field(default=0.0, metadata={"help": MIN_REWARD_GAIN_HELP})
    min_reward_gain_scale: str = field(default="reward", metadata={"help": MIN_REWARD_GAIN_SCALE_HELP})
    safety_threshold: float = field(default=SAFETY_THRESHOLD, metadata={"help": "gate of docs/method.md §7"})
    score_batch_size: int = field(default=32, metadata={"help": "answers per reward-model forward pass"})
    generation_batch_size: int = field(
        default=64, metadata={"help": "answers per generation batch (rows of several prompts; K rows each)"}
    )
    decode: str = field(default="dynamic", metadata={"help": DECODE_HELP})
    shard_frozen: bool = field(default=False, metadata={"help": SHARD_FROZEN_HELP})
    seed: int = field(default=0, metadata={"help": "run seed; each prompt's seed derives from it and its id"})
    finetune_lr: float = field(default=2e-5, metadata={"help": "SFT on the kept answers: peak learning rate"})
    finetune_epochs: float = field(default=2.0, metadata={"help": "SFT on the kept answers: epochs"})
    finetune_batch_size: int = field(
        default=16, metadata={"help": "SFT on the kept answers: dialogues per step, over all processes"}
    )
    max_length: int = field(default=4096, metadata={"help": "SFT on the kept answers: tokens per dialogue"})

    def __post_init__(self) -> None:
        check_field_types(self)
        if not self.policy:
            raise ValueError("policy: required, a checkpoint directory")
        spec = parse_reward_spec(self.reward, self.helpfulness_rm, self.safety_rm)
        if self.min_reward_gain_scale not in GAIN_SCALES:
            raise ValueError(f"min_reward_gain_scale: expected one of {', '.join(GAIN_SCALES)}, "
                             f"got {self.min_reward_gain_scale!r}")  # fmt: skip
        if self.min_reward_gain_scale == "logit" and spec.combine != "llama2_gate":
            raise ValueError(f"min_reward_gain_scale: 'logit' reads the gate's reward, a probability; the reward "
                             f"combines by {spec.combine}, whose reward has no logit: use 'reward'")  # fmt: skip
        require_source(self.prompts, "prompts", "a JSONL file of {id, prompt, is_safety} prompts")
        check_ranges(
            self,
            positive=("num_samples", "max_new_tokens", "world_prompts", "score_batch_size",
                      "generation_batch_size", "finetune_lr",
                      "finetune_epochs", "finetune_batch_size", "max_length"),
            fraction=("safety_threshold",),
            non_negative=("min_reward_gain",),
        )  # fmt: skip
        check_decode(self.decode, sharded=self.shard_frozen)
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")


def finetune_settings(config: RejectionSamplingConfig, processes: int = 1) -> dict[str, Any]:
    """`SFTConfig` keywords of the fine-tune on the kept answers (built by the recipe and by the rounds, which
    chain the two stages; the model, data and output folder are theirs to add). `finetune_batch_size` is the
    batch of a step over all `processes`, so the fine-tune takes the same steps on any number of them."""
    if config.finetune_batch_size % processes:
        raise ValueError(
            f"finetune_batch_size: {config.finetune_batch_size} dialogues per step do not split over {processes} "
            "processes; use a multiple of the process count"
        )
    return dict(
        lr=config.finetune_lr,
        num_train_epochs=config.finetune_epochs,
        per_device_batch_size=config.finetune_batch_size // processes,
        gradient_accumulation_steps=1,
        max_length=config.max_length,
        seed=config.seed,
    )


def read_shards(shard_dir: Path) -> dict[str, dict[str, Any]]:
    """Results already written by any process, by prompt id. A line counts once its newline is written (the
    writer's last byte of it): a line cut short by a kill, even one that is complete JSON, is ignored here and cut
    off by `drop_partial_line`, so its prompt is answered again."""
    done = {}
    for shard in sorted(shard_dir.glob("shard-*.jsonl")):
        for line in shard.read_text().split("\n")[:-1]:  # the part after the last newline is unfinished
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed writer
            done[record["id"]] = record
    return done


def drop_partial_line(path: Path) -> None:
    """Cut a shard back to its last complete line, so appending after a kill starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "r+b") as file:
            file.truncate(len(complete))


def best_of_k(
    policy: Any,
    tokenizer: Any,
    reward: RewardScorer,
    records: list[dict[str, Any]],
    config: RejectionSamplingConfig,
    synced_gpus: bool = False,
) -> list[dict[str, Any]]:
    """Sample K answers to each prompt (all prompts' rows batched together, each row from its own seed), score
    them with the reward sources, keep each prompt's best by reward (the gated reward of docs/method.md §7 by
    default). Each result keeps every candidate's reward and each source's score (`<source>_scores`: the gate's
    two as sigmoids, others raw). `synced_gpus`: the policy is sharded, so every process steps generation until
    all are done."""
    k = config.num_samples
    texts = chat_prompt_texts(tokenizer, [record["prompt"] for record in records])
    answers = complete(
        policy,
        tokenizer,
        [text for text in texts for _ in range(k)],
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        batch_size=config.generation_batch_size,
        row_seeds=[seed for record in records for seed in sample_seeds(config.seed, record["id"], k)],
        synced_gpus=synced_gpus,
        decode=config.decode,
    )
    prompts = [record["prompt"] for record in records for _ in range(k)]
    scores = reward.scores(prompts, answers)
    is_safety = torch.tensor([bool(record["is_safety"]) for record in records for _ in range(k)])
    rewards = reward.reward(scores, is_safety)
    logged = reward.logged(scores)
    results = []
    for i, record in enumerate(records):
        rows = slice(i * k, (i + 1) * k)
        candidates = answers[rows]
        by_reward = keep_candidate(candidates, rewards[rows])
        best = keep_candidate(candidates, rewards[rows], config.min_reward_gain, config.min_reward_gain_scale)
        results.append(
            {
                **record,
                "candidates": candidates,
                "rewards": json_numbers(rewards[rows].tolist()),
                **{f"{name}_scores": json_numbers(value[rows].tolist()) for name, value in logged.items()},
                "best": best,
                "kept_most_frequent": best != by_reward,  # min_reward_gain overruled the reward models' pick
                **(
                    {"messages": [*record["prompt"], {"role": "assistant", "content": candidates[best]}]}
                    if best is not None
                    else {}
                ),
            }
        )
    return results


def json_numbers(values: list[float]) -> list[float | None]:
    """`values` with every NaN or infinity as None (null): standard JSON, which jq, JavaScript and datasets read
    (Python's json writes them as NaN / -Infinity, which they refuse). Only an overflowed reward model gives one."""
    return [value if math.isfinite(value) else None for value in values]


def keep_candidate(
    candidates: list[str], rewards: torch.Tensor, min_reward_gain: float = 0.0, gain_scale: str = "reward"
) -> int | None:
    """Which of one prompt's candidates the stage keeps, given their rewards: `keep_index` over the non-empty
    ones, on the rewards themselves or (`gain_scale` "logit") on logit(reward), where `min_reward_gain` asks the
    same of a pick at any reward level (a gain of 0.1 in probability is 0.4 logits at R_c 0.5 and out of reach
    from 0.9 up). An empty answer is never kept, whatever its score: it cannot be a demonstration to fine-tune on."""
    if gain_scale == "logit":
        rewards = logit(rewards)
    eligible = rewards.masked_fill(torch.tensor([not a.strip() for a in candidates]), float("-inf"))
    return keep_index(candidates, eligible.tolist(), min_reward_gain)


def recorded_keep_rule(recorded: dict[str, Any]) -> dict[str, Any]:
    """`min_reward_gain` and `min_reward_gain_scale` of a finished stage's recorded config (this config's defaults
    for a stage recorded before either existed), as `keep_candidate` and the world's diagnostics take them."""
    fields = RejectionSamplingConfig.__dataclass_fields__
    return {name: recorded.get(name, fields[name].default) for name in ("min_reward_gain", "min_reward_gain_scale")}


def keep_index(candidates: list[str], rewards: list[float], min_reward_gain: float = 0.0) -> int | None:
    """Which of one prompt's candidates best-of-K keeps (None when every reward is -inf, i.e. every answer is
    empty, or NaN): the best-rewarded, unless `min_reward_gain` > 0 and it beats the most frequent answer (by
    stripped text; among equally frequent ones the best-rewarded) by no more than that, in which case the most
    frequent. A NaN reward (a reward model that overflowed) is never kept: NaN compares false with everything, so
    an argmax over it would keep whichever answer happened to come first."""
    finite = [i for i, reward in enumerate(rewards) if reward != float("-inf") and not math.isnan(reward)]
    if not finite:
        return None
    best = max(finite, key=lambda i: rewards[i])  # the first of equal rewards, as argmax
    if min_reward_gain <= 0:
        return best
    counts = Counter(candidates[i].strip() for i in finite)
    most_frequent = max(finite, key=lambda i: (counts[candidates[i].strip()], rewards[i]))
    return best if rewards[best] - rewards[most_frequent] > min_reward_gain else most_frequent


@releases_its_folder_on_error
def run_rejection_sampling(config: RejectionSamplingConfig) -> Path:
    """Best-of-K for every prompt, sharded over the processes; returns `output_dir/kept.jsonl`. A finished run
    (DONE.json) of the same config returns its kept answers; shards of a run with another config are refused."""
    state = PartialState(cpu=not torch.cuda.is_available())  # without a GPU: one gloo group (MULTI_CPU)
    output_dir = Path(config.output_dir)
    if (done := finished_run(output_dir, config, result="kept.jsonl")) is not None:
        return done
    spec = parse_reward_spec(config.reward, config.helpfulness_rm, config.safety_rm)
    policy_dir = require_model_dir(config.policy, "policy")
    for name, path in spec.models().items():
        require_reward_model_dir(path, spec.where(name))
    tokenizer = load_tokenizer(policy_dir)
    check_vocabulary(tokenizer, policy_dir, "policy")
    policy = load_causal_lm(policy_dir, "policy").to(state.device).eval()
    reward = RewardScorer.load(
        spec, state.device, config.score_batch_size, config.safety_threshold, fallback_tokenizer=tokenizer
    )
    sharded = config.shard_frozen and sharding_active()
    if sharded:
        for model in (policy, *reward.models()):
            shard_model(model.requires_grad_(False))
        for model in reward.likelihood_models():  # scored through its trunk and LM head, each its own unit
            shard_model(model, roots=causal_lm_parts(model, "likelihood model"))
    prompts = stage_prompts(config)
    check_prompt_lengths(tokenizer, prompts, policy.config.max_position_embeddings, config.max_new_tokens)

    shard_dir = output_dir / "shards"
    prepare_run(output_dir, config, is_main=state.is_main_process, extra_work=any(shard_dir.glob("shard-*.jsonl")))
    if state.is_main_process:
        shard_dir.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    done = read_shards(shard_dir)
    mine = [r for r in prompts[state.process_index :: state.num_processes] if r["id"] not in done]
    # Prompts of similar length go in one wave (less padding); the answers do not depend on the order.
    mine = [mine[i] for i in longest_first(tokenizer, chat_prompt_texts(tokenizer, [r["prompt"] for r in mine]))]
    # Sharded models run a collective per forward: every process takes as many prompts as the busiest one (a
    # process short of prompts repeats one and discards the result), so all run the same forwards.
    turns = most_prompts_on_a_process(len(mine), state.device) if sharded else len(mine)
    work = mine + [prompts[0]] * (turns - len(mine))
    wave = max(1, config.generation_batch_size // config.num_samples)  # prompts per wave: one batch of rows
    shard_path = shard_dir / f"shard-{state.process_index}.jsonl"
    drop_partial_line(shard_path)
    progress = tqdm(total=len(mine), desc=f"best-of-{config.num_samples}", disable=not state.is_local_main_process)
    with open(shard_path, "a") as shard, progress:
        for start in range(0, turns, wave):
            results = best_of_k(policy, tokenizer, reward, work[start : start + wave], config, sharded)
            # Repeats (past the end of `mine`) only ran the same forwards as the busiest process.
            for result in results[: max(0, len(mine) - start)]:
                shard.write(json.dumps(result, allow_nan=False) + "\n")
            shard.flush()
            os.fsync(shard.fileno())
            progress.update(min(wave, max(0, len(mine) - start)))
    state.wait_for_everyone()
    kept = output_dir / "kept.jsonl"
    if state.is_main_process:
        results = [read_shards(shard_dir)[r["id"]] for r in prompts]
        answered = [r for r in results if r["best"] is not None]  # every sample empty: nothing to keep
        atomic_write_jsonl(kept, answered)
        mark_done(
            output_dir,
            kept=str(kept),
            prompts=len(prompts),
            data_sources={"prompts": describe_sources(config.prompts, config.world_seed)},
            without_answer=len(results) - len(answered),
            resumed=len(done),
            processes=state.num_processes,
            mean_best_reward=statistics.fmean(r["rewards"][r["best"]] for r in answered) if answered else None,
            kept_most_frequent=sum(bool(r.get("kept_most_frequent")) for r in answered),
        )
        release_run_lock(output_dir)
    state.wait_for_everyone()
    return kept


def most_prompts_on_a_process(count: int, device: torch.device | str = "cpu") -> int:
    """The largest `count` over the processes."""
    largest = torch.tensor(count, device=device)
    torch.distributed.all_reduce(largest, op=torch.distributed.ReduceOp.MAX)
    return int(largest)


def best_of_k_curve(records: list[dict[str, Any]], values: str = "rewards") -> dict[str, list[float]]:
    """Mean over prompts of the max and of the median of the first k samples' `values`, for k = 1..K.

    Samples are i.i.d., so the first k are a fair draw of k (the paper's Figure 7: max vs median reward). A
    prompt with a score that is not a number (null: an overflowed reward model) is left out.
    """
    records = scored(records, values)
    largest = min(len(r[values]) for r in records)
    curve = {"k": list(range(1, largest + 1)), "max": [], "median": []}
    for k in curve["k"]:
        curve["max"].append(statistics.fmean(max(r[values][:k]) for r in records))
        curve["median"].append(statistics.fmean(statistics.median(r[values][:k]) for r in records))
    return curve


def picked_curve(records: list[dict[str, Any]], values: str, by: str = "rewards") -> list[float]:
    """Mean over prompts of `values` at the sample that `by` ranks best among the first k, for k = 1..K.

    With `values` a gold score attached to each candidate, this is the true quality of what best-of-k keeps:
    it rises with k only while the reward models rank the policy's samples the way the gold scorer does.
    """
    records = scored(scored(records, values), by)
    largest = min(len(r[by]) for r in records)
    picked = []
    for k in range(1, largest + 1):
        best = [max(range(k), key=lambda i: r[by][i]) for r in records]
        picked.append(statistics.fmean(r[values][i] for r, i in zip(records, best)))
    return picked


def scored(records: list[dict[str, Any]], values: str) -> list[dict[str, Any]]:
    """The records whose `values` are all numbers (json_numbers writes a NaN or infinite score as null)."""
    return [r for r in records if all(value is not None for value in r[values])]
