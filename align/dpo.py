"""Direct preference optimisation (DPO) on preference pairs, on TRL's `DPOTrainer` (docs/stages/dpo.md).

Llama 2 ran rejection sampling and PPO each round; Llama 3 kept the reward model and rejection sampling and
replaced PPO with DPO (Rafailov et al., 2023) on the round's preference pairs. DPO needs no reward model and no
sampling while training: it raises the policy's log-probability ratio to a frozen reference model on each chosen
answer over the rejected one, -log sigmoid(beta * [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))])
for the default `sigmoid` loss; every other loss TRL offers (IPO, hinge, robust, ...) is one setting away, and
several combine with weights (Llama 3's DPO plus an NLL term on the chosen answers: `loss_type: sigmoid,sft`,
`loss_weights: 1,0.2`).

    dpo(DPOConfig(model="runs/sft/final", dataset="pairs.jsonl"))  -> output_dir/final (LoRA merged when enabled)

Data (required, `align.sources`): comma-separated preference files or `datasets` names in any format
`align.data.load_preferences` reads (TRL, HH-RLHF, PKU-SafeRLHF, UltraFeedback; `data_format`), pooled, or
"world" for the synthetic world's helpfulness and safety pairs. Pairs are checked against `max_length` in the
chat format before TRL sees them (`align.reward_model.fitting_pairs`): a longer pair is skipped and counted, or
an error, never cut. The reference is the starting model (frozen) unless `reference` names another; with LoRA
it is the base model under the adapters (no second copy in memory).

The Llama 2 margin by preference strength has no counterpart in TRL's DPO losses (TRL 1.16 has no per-pair
offset), and align does not patch TRL's loss: `min_strength` instead keeps only pairs at least that clearly
preferred (the paper's "negligibly better / unsure" pairs are the noisy ones, §3.2.2).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import trl
from transformers import TrainerCallback

from .checkpoint import check_vocabulary, finished_run, releases_its_folder_on_error, require_model_dir, run_trainer
from .config import TrainerStageConfig, check_ranges, trainer_kwargs
from .data import load_preferences, load_tokenizer
from .data.preferences import FORMATS, STRENGTHS
from .data.tokenizer import CHAT_TEMPLATE_HELP, check_chat_template_setting
from .lora import adapter_finalizer, lora_config, parse_lora_setting
from .modeling import load_causal_lm
from .reward_model import TARGETS, fitting_pairs, world_pairs
from .sources import WORLD, announce_sources, require_source, split_sources
from .tracking import JsonlMetricsCallback

logger = logging.getLogger(__name__)

# The losses of TRL's DPOTrainer (trl.DPOConfig.loss_type); tests/test_dpo.py checks the list against TRL's own.
LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip


@dataclass
class DPOConfig(TrainerStageConfig):
    """DPO settings. The optimizer is the paper's AdamW (`TrainerStageConfig`); beta 0.1 and lr 1e-6 are TRL's
    defaults (Llama 3 reports beta 0.1), one epoch over the pairs."""

    shipped_configs = "dpo"  # `--config NAME`: align/configs/dpo/NAME.yaml (not a field)

    model: str = field(default="", metadata={"help": "the policy to start from: any transformers decoder checkpoint"})
    reference: str | None = field(
        default=None, metadata={"help": "the frozen reference model (default: the starting model itself)"}
    )
    as_align_llama: bool = field(
        default=False,
        metadata={"help": "load a Llama checkpoint into align's own model (align_llama) instead of its own class"},
    )
    output_dir: str = field(default="runs/dpo", metadata={"help": "run folder: checkpoints, metrics, final/"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer directory (default: the model's)"})
    dataset: str | None = field(
        default=None,
        metadata={"help": "required: preference pairs, comma-separated files or datasets names (pooled), or 'world' "
                          "for the demo's helpfulness and safety pairs"},
    )  # fmt: skip
    data_format: str = field(default="auto", metadata={"help": f"format of every data file, one of {list(FORMATS)}"})
    target: str = field(
        default="helpfulness",
        metadata={"help": "which answer of a PKU-SafeRLHF record is chosen: the better (helpfulness) or the safer"},
    )
    chat_template: str = field(default="tokenizer", metadata={"help": CHAT_TEMPLATE_HELP})
    loss_type: str = field(
        default="sigmoid", metadata={"help": f"TRL's DPO loss, or several comma-separated: {', '.join(LOSS_TYPES)}"}
    )
    loss_weights: str | None = field(
        default=None, metadata={"help": "weights of the comma-separated losses, e.g. '1,0.2' (default: 1 each)"}
    )
    beta: float = field(default=0.1, metadata={"help": "how far from the reference the policy may go (higher: less)"})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "assumed share of flipped labels (robust loss) or epsilon (exo_pair)"}
    )
    min_strength: str = field(
        default="unsure",
        metadata={"help": f"train only on pairs at least this clearly preferred, one of {list(STRENGTHS)} "
                          "('unsure': every pair)"},
    )  # fmt: skip
    precompute_ref_log_probs: bool = field(
        default=False, metadata={"help": "score every pair with the reference once before training (less memory)"}
    )
    max_length: int = field(default=4096, metadata={"help": "tokens per prompt + answer"})
    on_long: str = field(default="skip", metadata={"help": "pairs longer than max_length: skip (counted) or raise"})
    world_seed: int = field(default=0, metadata={"help": "seed of the synthetic world (dataset=world)"})
    world_pairs: int = field(default=2000, metadata={"help": "world prompts labelled per data set"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs over the pairs"})
    lr: float = field(default=1e-6, metadata={"help": "peak learning rate (cosine schedule)"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "cosine decays to this fraction of the peak"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps for linear warmup"})
    per_device_batch_size: int = field(default=8, metadata={"help": "pairs per device and micro-step"})
    gradient_accumulation_steps: int = field(default=8, metadata={"help": "micro-steps per optimizer step"})
    lora: dict | str | None = field(
        default=None, metadata={"help": "LoRA settings {r, alpha, dropout, target_modules}; off if unset"}
    )
    merge_lora: bool = field(default=True, metadata={"help": "merge LoRA adapters into a full final checkpoint"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise ValueError("model: required, the checkpoint directory to train (the policy)")
        require_source(self.dataset, "dataset", "preference pairs (files or datasets) to train on")
        if self.data_format not in FORMATS:
            raise ValueError(f"data_format: expected one of {list(FORMATS)}, got {self.data_format!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target: expected one of {list(TARGETS)}, got {self.target!r}")
        check_chat_template_setting(self.chat_template)
        unknown = [name for name in self.loss_types if name not in LOSS_TYPES]
        if unknown or not self.loss_types:
            raise ValueError(f"loss_type: expected one or more of {', '.join(LOSS_TYPES)} (comma-separated), got "
                             f"{self.loss_type!r}")  # fmt: skip
        if self.loss_weights is not None and len(self.weights) != len(self.loss_types):
            raise ValueError(f"loss_weights: expected {len(self.loss_types)} numbers (one per loss in loss_type "
                             f"{self.loss_type!r}), got {self.loss_weights!r}")  # fmt: skip
        if self.min_strength not in STRENGTHS:
            raise ValueError(f"min_strength: expected one of {list(STRENGTHS)}, got {self.min_strength!r}")
        if self.on_long not in ("skip", "raise"):
            raise ValueError(f"on_long: expected 'skip' or 'raise', got {self.on_long!r}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing: must be in [0, 0.5), got {self.label_smoothing}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio: must be in [0, 1], got {self.warmup_ratio}")
        self.lora = parse_lora_setting(self.lora)
        check_ranges(self, positive=("beta", "max_length", "world_pairs", "num_train_epochs"))

    @property
    def loss_types(self) -> list[str]:
        return [name.strip() for name in self.loss_type.split(",") if name.strip()]

    @property
    def weights(self) -> list[float] | None:
        """`loss_weights` as numbers (None: TRL's default, 1 each); ValueError naming the option."""
        if self.loss_weights is None:
            return None
        try:
            weights = [float(weight) for weight in str(self.loss_weights).split(",")]
        except ValueError:
            weights = []
        if not weights or not all(math.isfinite(weight) for weight in weights):  # nan/inf: caught before training
            raise ValueError(f"loss_weights: expected comma-separated finite numbers, got {self.loss_weights!r}")
        return weights


def load_dpo_pairs(config: DPOConfig) -> datasets.Dataset:
    """The pairs `config.dataset` names, pooled, at least `min_strength` clear (TRL's conversational columns plus
    `strength`, `is_safety`, `source`); ValueError naming the option when the filter leaves none."""
    parts = []
    for source in split_sources(config.dataset):
        if source == WORLD:  # both of the world's data sets, as Llama 3 trains DPO on helpfulness and safety pairs
            parts += [world_pairs(target, config.world_pairs, "train", seed=1 + index, world_seed=config.world_seed)
                      for index, target in enumerate(TARGETS)]  # fmt: skip
        else:
            parts.append(load_preferences(source, format=config.data_format, target=config.target,
                                          margin_scheme=None, option="dataset"))  # fmt: skip
    pairs = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    strong_enough = set(STRENGTHS[: STRENGTHS.index(config.min_strength) + 1])
    kept = pairs.select([i for i, strength in enumerate(pairs["strength"]) if strength in strong_enough])
    if len(kept) == 0:
        raise ValueError(f"dataset {config.dataset}: none of its {len(pairs)} pairs is at least "
                         f"min_strength={config.min_strength}")  # fmt: skip
    return kept


def training_arguments(config: DPOConfig) -> trl.DPOConfig:
    """TRL's `DPOConfig` for the stage settings. `max_length=None`: lengths are checked by `fitting_pairs`, so TRL
    never truncates an answer."""
    return trl.DPOConfig(
        **trainer_kwargs(config),
        num_train_epochs=config.num_train_epochs,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the total steps
        max_length=None,
        beta=config.beta,
        loss_type=config.loss_types,
        loss_weights=config.weights,
        label_smoothing=config.label_smoothing,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
    )


@releases_its_folder_on_error
def dpo(config: DPOConfig, callbacks: list[TrainerCallback] | None = None) -> Path:
    """Run (or resume) DPO; returns `output_dir/final` (a full model: LoRA adapters merged when enabled)."""
    if (done := finished_run(config.output_dir, config)) is not None:
        return done
    model_dir = require_model_dir(config.model, "model")
    reference_dir = require_model_dir(config.reference, "reference") if config.reference else None
    tokenizer = load_tokenizer(config.tokenizer or model_dir, config.chat_template)
    check_vocabulary(tokenizer, model_dir, "model")
    if reference_dir is not None:
        check_vocabulary(tokenizer, reference_dir, "reference")
    sources = announce_sources("dpo", {"dataset": config.dataset}, config.world_seed)
    pairs = load_dpo_pairs(config)
    fitting = [index for index, *_ in fitting_pairs(pairs, tokenizer, config.max_length, config.on_long,
                                                    f"dataset {config.dataset}")]  # fmt: skip
    train_rows = pairs.select(fitting).select_columns(["prompt", "chosen", "rejected"])
    model = load_causal_lm(model_dir, "model", as_align_llama=config.as_align_llama)
    # TRL's own reference (a copy loaded from the policy's path) would be in the checkpoint's own class, not
    # align_llama under as_align_llama; with LoRA and no other reference (or the policy named as its own, as the
    # rounds do), the adapters off are the reference, and precomputed log-probs need no model at all.
    separate = reference_dir is not None and reference_dir.resolve() != model_dir.resolve()
    needs_reference = separate or (config.lora is None and not config.precompute_ref_log_probs)
    reference = (
        load_causal_lm(reference_dir if separate else model_dir, "reference", as_align_llama=config.as_align_llama)
        if needs_reference
        else None
    )
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=reference,
        args=training_arguments(config),
        train_dataset=train_rows,
        processing_class=tokenizer,
        peft_config=lora_config(config.lora) if config.lora is not None else None,
        callbacks=[JsonlMetricsCallback(config.output_dir), *(callbacks or [])],
    )
    finalize = adapter_finalizer(tokenizer, Path(config.output_dir) / "adapter", merge=config.merge_lora)
    return run_trainer(
        trainer,
        config,
        tokenizer,
        finalize=finalize,
        pairs=len(train_rows),
        skipped_long=len(pairs) - len(train_rows),
        reference=str(reference_dir or model_dir),
        lora=config.lora,
        data_sources=sources,
    )
