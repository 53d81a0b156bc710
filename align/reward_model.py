"""Reward models (docs/method.md §5): helpfulness and safety, trained with the margin ranking loss on TRL.

The model is the chat (SFT) checkpoint loaded as a sequence classifier in its own architecture
(`AutoModelForSequenceClassification`: align_llama, Llama, Qwen2, Mistral, ...): the decoder weights are kept,
the next-token head is dropped and a fresh scalar head reads the last token. TRL's
`RewardTrainer` trains it with -log sigmoid(r_c - r_r - m) using the `margin` column we fill from each pair's
strength (`align.rewards.margin_for_strength`).

Pairs are tokenized here (the chat format of `align.data`) so that a pair longer than `max_length` is a
counted skip or an error, never silently dropped, and a pair's `strength` / `is_safety` stay beside it for the
per-bucket evaluation.

Data (required, `align.sources`): `helpfulness_data` and `safety_data` name preference files (each with its
own format, `auto` by default: `align.data.preferences.detect_format`) or `datasets` names, or "world" to ask
for the synthetic world's pairs; `eval_data` names held-out pairs (required with the user's data; "none" skips
the evaluation, "world" is the world's test pairs).

Data mix (paper §3.2.2): the helpfulness RM sees all helpfulness pairs plus other-target (safety) pairs making
`other_share` of the mix (default 0.5, an equal share); the safety RM sees all safety pairs plus helpfulness
pairs making 10% of its mix. In the world, helpfulness pairs are pairs on helpfulness prompts labelled for
helpfulness, safety pairs are pairs on safety prompts labelled for safety.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import trl
from transformers import TrainerCallback, set_seed

from .checkpoint import check_vocabulary, finished_run, releases_its_folder_on_error, require_model_dir, run_trainer
from .config import TrainerStageConfig, check_ranges, trainer_kwargs
from .data import load_preferences, load_tokenizer
from .data.chat import surely_longer_than
from .data.preferences import FORMATS, PreferenceDataError
from .data.tokenizer import CHAT_TEMPLATE_HELP, check_chat_template_setting
from .lora import adapter_finalizer, lora_config, parse_lora_setting
from .modeling import load_sequence_classifier
from .rewards import MARGINS, conversation_ids, margin_for_strength, score
from .sources import WORLD, announce_sources, is_world, require_source, split_sources
from .tracking import JsonlMetricsCallback

logger = logging.getLogger(__name__)

TARGETS = ("helpfulness", "safety")
DEFAULT_OTHER_SHARE = {"helpfulness": 0.5, "safety": 0.1}


@dataclass
class RewardModelConfig(TrainerStageConfig):
    """Reward-model settings; defaults are the paper's (1 epoch, lr 1e-5 cosine to 10%, warmup 3%, >= 5 steps,
    batch 512 pairs over the processes). The optimizer fields come from `TrainerStageConfig`."""

    shipped_configs = "reward_model"  # `--config NAME`: align/configs/reward_model/NAME.yaml (not a field)

    model: str = field(default="", metadata={"help": "chat (SFT) checkpoint to initialise from"})
    target: str = field(default="helpfulness", metadata={"help": "helpfulness or safety"})
    output_dir: str = field(default="runs/reward_model", metadata={"help": "run folder"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer directory (default: the model's)"})
    helpfulness_data: str | None = field(
        default=None, metadata={"help": "helpfulness pairs: comma-separated preference files or datasets, or 'world'"}
    )
    safety_data: str | None = field(
        default=None, metadata={"help": "safety pairs: comma-separated preference files or datasets, or 'world' (not "
                                        "needed by the helpfulness RM with other_share 0)"}
    )  # fmt: skip
    data_format: str = field(default="auto", metadata={"help": f"format of every data file, one of {list(FORMATS)}"})
    helpfulness_format: str | None = field(
        default=None, metadata={"help": f"format of helpfulness_data, one of {list(FORMATS)} (default: data_format)"}
    )
    safety_format: str | None = field(
        default=None, metadata={"help": f"format of safety_data, one of {list(FORMATS)} (default: data_format)"}
    )
    eval_format: str | None = field(
        default=None, metadata={"help": f"format of eval_data, one of {list(FORMATS)} (default: data_format)"}
    )
    chat_template: str = field(default="tokenizer", metadata={"help": CHAT_TEMPLATE_HELP})
    other_share: float | None = field(
        default=None, metadata={"help": "share of the other target's pairs in the mix (default 0.5 / 0.1)"}
    )
    world_seed: int = field(default=0, metadata={"help": "seed of the synthetic world"})
    world_pairs: int = field(default=2000, metadata={"help": "world prompts labelled per data set"})
    helpfulness_quality_mix: dict | str | None = field(
        default=None,
        metadata={"help": "qualities of the world's helpfulness answers, e.g. {good: 0.5, near: 0.5} (default: the "
                  "world's mix); near misses are what teaches a reward model to check answers"},
    )  # fmt: skip
    eval_data: str | None = field(
        default=None, metadata={"help": "held-out pairs to report accuracy on: files, 'none' (no evaluation) or "
                                        "'world' (the default when the training data is the world's)"}
    )  # fmt: skip
    lora: dict | str | None = field(
        default=None, metadata={"help": "LoRA settings {r, alpha, dropout, target_modules}; off if unset"}
    )
    margin_scheme: str = field(default="small", metadata={"help": "margin by strength: none, small or large"})
    max_length: int = field(default=4096, metadata={"help": "tokens per prompt + answer"})
    on_long: str = field(default="skip", metadata={"help": "pairs longer than max_length: skip (counted) or raise"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs (the paper: 1; more over-fits)"})
    lr: float = field(default=1e-5, metadata={"help": "peak learning rate (5e-6 for 70B)"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "warmup share of the steps (at least 5 steps)"})
    per_device_batch_size: int = field(default=8, metadata={"help": "pairs per device and micro-step"})
    gradient_accumulation_steps: int = field(default=8, metadata={"help": "micro-steps per optimizer step"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise ValueError("model: required, the chat (SFT) checkpoint to initialise the reward model from")
        if self.target not in TARGETS:
            raise ValueError(f"target: expected one of {list(TARGETS)}, got {self.target!r}")
        if self.margin_scheme not in MARGINS:
            raise ValueError(f"margin_scheme: expected one of {list(MARGINS)}, got {self.margin_scheme!r}")
        for name in ("data_format", "helpfulness_format", "safety_format", "eval_format"):
            if getattr(self, name) is not None and getattr(self, name) not in FORMATS:
                raise ValueError(f"{name}: expected one of {list(FORMATS)}, got {getattr(self, name)!r}")
        check_chat_template_setting(self.chat_template)
        if self.on_long not in ("skip", "raise"):
            raise ValueError(f"on_long: expected 'skip' or 'raise', got {self.on_long!r}")
        self.lora = parse_lora_setting(self.lora)
        if self.other_share is None:
            self.other_share = DEFAULT_OTHER_SHARE[self.target]
        if not 0 <= self.other_share < 1:
            raise ValueError(f"other_share: must be in [0, 1), got {self.other_share}")
        other = "safety" if self.target == "helpfulness" else "helpfulness"
        require_source(getattr(self, f"{self.target}_data"), f"{self.target}_data", f"{self.target} preference pairs")
        if self.other_share > 0:
            require_source(
                getattr(self, f"{other}_data"), f"{other}_data",
                f"{other} pairs for the {self.target} RM's mix (other_share={self.other_share}; 0 trains without)",
            )  # fmt: skip
        if self.eval_data is None:
            if not all(is_world(getattr(self, f"{t}_data")) for t in TARGETS if getattr(self, f"{t}_data")):
                raise ValueError(
                    "eval_data: required with your own data: held-out preference pairs to measure accuracy on "
                    "(or 'none' to skip the evaluation)"
                )
            self.eval_data = WORLD
        if isinstance(self.helpfulness_quality_mix, str):
            try:
                text = self.helpfulness_quality_mix.strip()
                self.helpfulness_quality_mix = json.loads(text) if text else None
            except json.JSONDecodeError:
                raise ValueError(
                    f"helpfulness_quality_mix: expected a JSON mapping like '{{\"good\": 0.5}}', "
                    f"got {self.helpfulness_quality_mix!r}"
                ) from None
        if self.helpfulness_quality_mix is not None:
            from .world import QUALITIES

            mix = self.helpfulness_quality_mix
            unknown = set(mix) - set(QUALITIES) if isinstance(mix, dict) else {"(not a mapping)"}
            weights_ok = all(isinstance(v, (int, float)) and v >= 0 for v in mix.values()) and sum(mix.values())
            if unknown or not weights_ok:
                raise ValueError(
                    f"helpfulness_quality_mix: expected weights >= 0 (not all 0) for qualities in {list(QUALITIES)}, "
                    f"got {mix!r}"
                )
        check_ranges(self, positive=("max_length", "world_pairs", "num_train_epochs"))


def world_pairs(
    target: str,
    count: int,
    split: str,
    seed: int,
    world_seed: int = 0,
    quality_mix: dict[str, float] | None = None,
    margin_scheme: str = "small",
) -> datasets.Dataset:
    """World pairs of one data set: helpfulness pairs on helpfulness prompts, safety pairs on safety prompts;
    `quality_mix` weighs the qualities of the scripted answers (default: the world's mix)."""
    from .world import TARGET_PROMPT_MIX, World  # only the demo data needs the world

    world = World(seed=world_seed)
    prompts = world.prompts(count, split, seed=seed, mix=TARGET_PROMPT_MIX[target])
    pairs = world.preference_pairs(prompts, target, seed=seed, quality_mix=quality_mix)
    return load_preferences(pairs, margin_scheme=margin_scheme)


def load_pairs(config: RewardModelConfig, target: str) -> datasets.Dataset:
    """The pairs of one data set, pooled over its comma-separated sources (e.g. every round's batch so far)."""
    sources = split_sources(getattr(config, f"{target}_data"))
    file_format = getattr(config, f"{target}_format") or config.data_format
    parts = [
        world_pairs(
            target,
            config.world_pairs,
            "train",
            seed=1 + TARGETS.index(target),
            world_seed=config.world_seed,
            quality_mix=config.helpfulness_quality_mix if target == "helpfulness" else None,
            margin_scheme=config.margin_scheme,
        )
        if source == WORLD
        else load_preferences(
            source, format=file_format, target=target, margin_scheme=config.margin_scheme, option=f"{target}_data"
        )
        for source in sources
    ]
    if not parts:
        raise ValueError(f"{target}_data: no source given")
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def sample_for_mix(own_count: int, other: datasets.Dataset, other_share: float, seed: int) -> datasets.Dataset:
    """A random sample of `other` that makes `other_share` of a mix with `own_count` own pairs (as much as there
    is): the safety RM's 10% of helpfulness pairs, the helpfulness RM's equal share of safety pairs."""
    wanted = math.ceil(own_count * other_share / (1 - other_share)) if other_share else 0
    return other.select(random.Random(seed).sample(range(len(other)), min(wanted, len(other))))


def fitting_pairs(
    pairs: datasets.Dataset, tokenizer: Any, max_length: int, on_long: str = "skip", what: str = "pairs"
) -> Iterator[tuple[int, dict[str, Any], list[int], list[int]]]:
    """(index, pair, chosen ids, rejected ids) of each pair whose prompt + longer answer fits in `max_length`
    tokens of the chat format; a longer pair raises (`on_long="raise"`, naming it) or is skipped and counted
    (logged at the end). When none fits, PreferenceDataError naming `what` (the data set). The reward models
    and DPO read their pairs through it, so that no pair is ever cut or dropped silently."""
    kept = too_long = 0
    for index, pair in enumerate(pairs):
        contents = [m["content"] for m in pair["prompt"]] + [max(pair["chosen"][0]["content"],
                                                                 pair["rejected"][0]["content"], key=len)]  # fmt: skip
        if surely_longer_than(tokenizer, contents, max_length):  # a huge pair: not tokenized at all
            if on_long == "raise":
                raise PreferenceDataError(f"{pair['source']}: pair {index}: {sum(map(len, contents))} characters, "
                                          f"more tokens than max_length={max_length} whatever the tokenizer")  # fmt: skip
            too_long += 1
            continue
        chosen = conversation_ids(tokenizer, pair["prompt"], pair["chosen"][0]["content"])
        rejected = conversation_ids(tokenizer, pair["prompt"], pair["rejected"][0]["content"])
        if max(len(chosen), len(rejected)) > max_length:
            if on_long == "raise":
                raise PreferenceDataError(
                    f"{pair['source']}: pair {index}: {max(len(chosen), len(rejected))} tokens, longer than "
                    f"max_length={max_length}"
                )
            too_long += 1
            continue
        kept += 1
        yield index, pair, chosen, rejected
    if too_long:
        logger.warning(
            "%s: skipped %d of %d pairs longer than max_length=%d tokens", what, too_long, len(pairs), max_length
        )
    if not kept:
        raise PreferenceDataError(
            f"{what}: no pair fits in max_length={max_length} tokens (all {too_long} are longer); raise max_length"
        )


def tokenize_pairs(
    pairs: datasets.Dataset, tokenizer: Any, scheme: str, max_length: int, on_long: str = "skip", what: str = "pairs"
) -> datasets.Dataset:
    """Rows `chosen_ids`, `rejected_ids`, `margin` (+ `strength`, `is_safety`) for TRL's RewardTrainer.

    A pair's `margin` (the data's own, or its strength's under the stage's scheme, as `load_pairs` reads them)
    is used as is; a pair without one gets its strength's margin under `scheme`. Pairs longer than `max_length`
    raise or are skipped and counted (`fitting_pairs`).
    """
    rows = []
    for _, pair, chosen, rejected in fitting_pairs(pairs, tokenizer, max_length, on_long, what):
        margin = pair["margin"] if pair.get("margin") is not None else margin_for_strength(pair["strength"], scheme)
        rows.append(
            {
                "chosen_ids": chosen,
                "rejected_ids": rejected,
                "margin": float(margin),
                "strength": pair["strength"],
                "is_safety": pair["is_safety"],
            }
        )
    return datasets.Dataset.from_list(rows)


def build_model(model_dir: Path, tokenizer: Any, seed: int = 0) -> torch.nn.Module:
    """The reward model: the chat model's decoder with a fresh scalar head (its LM head is not loaded), drawn
    from `seed` so that the run does not depend on what used the random state before (e.g. process count)."""
    set_seed(seed)
    model = load_sequence_classifier(model_dir, "model", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def training_arguments(config: RewardModelConfig, steps: int) -> trl.RewardConfig:
    """TRL's `RewardConfig` with the paper's schedule: cosine to 10%, warmup 3% of the steps but at least 5."""
    return trl.RewardConfig(
        **trainer_kwargs(config),
        max_length=None,  # lengths are checked by tokenize_pairs, which counts what it skips
        num_train_epochs=config.num_train_epochs,
        warmup_steps=max(5, math.ceil(config.warmup_ratio * steps)),
        center_rewards_coefficient=None,
    )


@releases_its_folder_on_error
def train_reward_model(config: RewardModelConfig, callbacks: list[TrainerCallback] | None = None) -> Path:
    """Train (or resume) one reward model; returns `output_dir/final`."""
    if (done := finished_run(config.output_dir, config)) is not None:
        return done
    model_dir = require_model_dir(config.model, "model")
    tokenizer = load_tokenizer(config.tokenizer or model_dir, config.chat_template)
    check_vocabulary(tokenizer, model_dir, "model")
    other_target = "safety" if config.target == "helpfulness" else "helpfulness"
    sources = announce_sources(
        f"reward_model {config.target}",
        {
            f"{config.target}_data": getattr(config, f"{config.target}_data"),
            **({f"{other_target}_data": getattr(config, f"{other_target}_data")} if config.other_share else {}),
            **({"eval_data": config.eval_data} if config.eval_data != "none" else {}),
        },
        config.world_seed,
    )

    def tokenized(pairs: datasets.Dataset, target: str) -> datasets.Dataset:
        what = f"{target}_data {getattr(config, f'{target}_data')}"
        return tokenize_pairs(pairs, tokenizer, config.margin_scheme, config.max_length, config.on_long, what)

    own = tokenized(load_pairs(config, config.target), config.target)
    mixed_in = own.select([])
    if config.other_share:  # each data set tokenized on its own, so that neither can vanish unnoticed
        other = sample_for_mix(len(own), load_pairs(config, other_target), config.other_share, config.seed)
        mixed_in = tokenized(other, other_target)
    train_rows = datasets.concatenate_datasets([own, mixed_in]).shuffle(seed=config.seed)
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate / torchrun
    batch = config.per_device_batch_size * config.gradient_accumulation_steps * processes
    steps = config.max_steps if config.max_steps > 0 else math.ceil(len(train_rows) / batch * config.num_train_epochs)
    trainer = trl.RewardTrainer(
        model=build_model(model_dir, tokenizer, config.seed),
        args=training_arguments(config, steps),
        train_dataset=train_rows,
        processing_class=tokenizer,
        callbacks=[JsonlMetricsCallback(config.output_dir), *(callbacks or [])],
        peft_config=lora_config(config.lora, task_type="SEQ_CLS") if config.lora is not None else None,
    )
    return run_trainer(
        trainer,
        config,
        tokenizer,
        finalize=adapter_finalizer(tokenizer, Path(config.output_dir) / "adapter"),
        lora=config.lora,
        target=config.target,
        pairs=len(train_rows),
        own_pairs=len(own),
        mixed_in=len(mixed_in),
        data_sources=sources,
    )


def predict_pairs(model: Any, tokenizer: Any, pairs: datasets.Dataset, batch_size: int = 32) -> list[dict[str, Any]]:
    """Reward of the chosen and the rejected answer of each pair, with its strength and safety tag."""
    prompts = list(pairs["prompt"])
    chosen = score(model, tokenizer, prompts, [c[0]["content"] for c in pairs["chosen"]], batch_size).raw
    rejected = score(model, tokenizer, prompts, [r[0]["content"] for r in pairs["rejected"]], batch_size).raw
    return [
        {"chosen_reward": float(c), "rejected_reward": float(r), "strength": s, "is_safety": bool(t)}
        for c, r, s, t in zip(chosen, rejected, pairs["strength"], pairs["is_safety"])
    ]


def eval_pairs(config: RewardModelConfig) -> datasets.Dataset | None:
    """The held-out pairs `config.eval_data` names (None for 'none'): the world's test pairs, or the user's
    files read as `eval_format` (else `data_format`) for the config's target."""
    if config.eval_data == "none":
        return None
    return named_held_out_pairs(config.eval_data, config.eval_format or config.data_format, config.target,
                                config.world_seed, option="eval_data")  # fmt: skip


def named_held_out_pairs(
    value: str, file_format: str, target: str, world_seed: int = 0, option: str = "held-out pairs"
) -> datasets.Dataset:
    """The held-out pairs the setting `option` names: comma-separated files read as `file_format` for `target`,
    or "world" (the world's test pairs, `held_out_pairs`)."""
    parts = [
        held_out_pairs(world_seed=world_seed)
        if source == WORLD
        else load_preferences(source, format=file_format, target=target, option=option)
        for source in split_sources(value)
    ]
    if not parts:
        raise ValueError(f"{option}: no source given")
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def held_out_pairs(count: int = 400, world_seed: int = 0) -> datasets.Dataset:
    """The world's two held-out test sets, as the paper evaluates both reward models on both (Table 7): pairs on
    helpfulness test prompts labelled for helpfulness, and pairs on safety test prompts labelled for safety.
    `is_safety` tells them apart."""
    return datasets.concatenate_datasets(
        [world_pairs(target, count, "test", seed=101, world_seed=world_seed) for target in TARGETS]
    )
