"""Supervised fine-tuning on the Llama 2 chat format (docs/method.md §4), on TRL's `SFTTrainer`.

Dialogues are tokenized here with `align.data.tokenize_dialogue`, so the loss mask is ours and exact: every
assistant answer (with its leading space and ` </s>`) is trained on, system and user tokens are masked. A record
with `"loss_on": "last"` (Ghost Attention dialogues, §4) trains on its last answer only. TRL receives the
`input_ids` / `assistant_masks` rows and turns the masks into labels; everything else (packing, optimizer,
schedule, LoRA through peft, distributed launch) is TRL and transformers as they are.

    sft(SFTConfig(model="runs/pretrain/final", dataset="world"))  -> output_dir/final (LoRA merged when enabled)

Data (required, `align.sources`): comma-separated local JSONL / JSON / Parquet files or `datasets` names
(pooled), of records `{"messages": [...], "loss_on": "all"|"last"}`, or `dataset="world"` to ask for the
synthetic world's demonstrations (Ghost Attention included); `gatt_dataset` mixes in a second such file whose
records all train on the last answer. The chat template is the tokenizer's own unless `chat_template` says
otherwise (`align.data.tokenizer`); answers are located under any template (`align.data.chat.answer_mask`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import trl
from transformers import PreTrainedTokenizerBase, TrainerCallback

from .checkpoint import check_vocabulary, finished_run, releases_its_folder_on_error, require_model_dir, run_trainer
from .config import TrainerStageConfig, check_ranges, trainer_kwargs
from .data import CHAT_TEMPLATE_HELP, DialogueError, load_tokenizer, tokenize_dialogue
from .data.chat import surely_longer_than
from .data.tokenizer import check_chat_template_setting
from .io import strict_records, table_records
from .lora import adapter_finalizer, lora_config, parse_lora_setting
from .modeling import load_causal_lm
from .sources import WORLD, announce_sources, require_source, split_sources
from .tracking import JsonlMetricsCallback

logger = logging.getLogger(__name__)


@dataclass
class SFTConfig(TrainerStageConfig):
    """SFT settings; defaults are the paper's (2 epochs, lr 2e-5 cosine, weight decay 0.1, batch 64, 4096 tokens).
    The optimizer fields come from `TrainerStageConfig`."""

    shipped_configs = "sft"  # `--config NAME`: align/configs/sft/NAME.yaml (not a field)

    model: str = field(
        default="", metadata={"help": "checkpoint to start from: any transformers decoder (Llama, Qwen, Mistral, ...)"}
    )
    as_align_llama: bool = field(
        default=False,
        metadata={"help": "load a Llama checkpoint into align's own model (align_llama) instead of its own class"},
    )
    output_dir: str = field(default="runs/sft", metadata={"help": "run folder: checkpoints, metrics, final/"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer directory (default: the model's)"})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "required: .jsonl/.json/.parquet files of messages or datasets names "
            "(comma-separated), or 'world' for the demo's synthetic dialogues"
        },
    )
    chat_template: str = field(default="tokenizer", metadata={"help": CHAT_TEMPLATE_HELP})
    gatt_dataset: str | None = field(default=None, metadata={"help": "extra Ghost Attention dialogues (last answer)"})
    world_seed: int = field(default=0, metadata={"help": "seed of the synthetic world (dataset=world)"})
    world_dialogues: int = field(default=2000, metadata={"help": "demonstrations drawn from the world"})
    world_gatt_fraction: float = field(default=0.15, metadata={"help": "share of Ghost Attention dialogues"})
    world_safety_fraction: float = field(default=0.1, metadata={"help": "share of safety demonstrations"})
    world_careless_fraction: float = field(
        default=0.0, metadata={"help": "share of demonstrations with a careless writer's slip (World.sft_dialogues)"}
    )
    max_length: int = field(default=4096, metadata={"help": "tokens per sequence (longer dialogues are an error)"})
    packing: bool = field(default=False, metadata={"help": "pack dialogues into max_length rows"})
    num_train_epochs: float = field(default=2.0, metadata={"help": "epochs over the data"})
    lr: float = field(default=2e-5, metadata={"help": "peak learning rate (cosine schedule)"})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "cosine decays to this fraction of the peak"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "share of steps for linear warmup"})
    per_device_batch_size: int = field(default=4, metadata={"help": "dialogues per device and micro-step"})
    gradient_accumulation_steps: int = field(default=16, metadata={"help": "micro-steps per optimizer step"})
    lora: dict | str | None = field(
        default=None,
        metadata={"help": "LoRA settings {r, alpha, dropout, target_modules} (YAML mapping or JSON); off if unset"},
    )
    merge_lora: bool = field(default=True, metadata={"help": "merge LoRA adapters into a full final checkpoint"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model:
            raise ValueError("model: required, the checkpoint directory to fine-tune")
        require_source(self.dataset, "dataset", "dialogue files of {messages} records to fine-tune on")
        check_chat_template_setting(self.chat_template)
        self.lora = parse_lora_setting(self.lora)
        check_ranges(self, positive=("max_length", "world_dialogues", "num_train_epochs"))
        for name in ("world_gatt_fraction", "world_safety_fraction", "world_careless_fraction", "warmup_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")


def read_dialogue_records(
    source: str, *, default_loss_on: str = "all", option: str = "dataset"
) -> list[dict[str, Any]]:
    """Records `{"messages", "loss_on", "where"}` of a local file or a `datasets` name."""
    name, records = table_records(source, option)
    dialogues = []
    for where, row in strict_records(name, records):
        if "messages" not in row:
            raise ValueError(f"{name}: {where}: expected a 'messages' field, fields are {sorted(row)}")
        dialogues.append(
            {
                "messages": row["messages"],
                "loss_on": row.get("loss_on") or default_loss_on,
                "where": f"{name}: {where}",
            }
        )
    if not dialogues:
        raise ValueError(f"{option} {name}: no dialogues (the file is empty)")
    return dialogues


def world_dialogue_records(config: SFTConfig) -> list[dict[str, Any]]:
    from .world import World  # only the demo data needs the world

    dialogues = World(seed=config.world_seed).sft_dialogues(
        config.world_dialogues,
        gatt_fraction=config.world_gatt_fraction,
        safety_fraction=config.world_safety_fraction,
        careless_fraction=config.world_careless_fraction,
    )
    return [dict(record, where=f"world: dialogue {i}") for i, record in enumerate(dialogues)]


def build_dataset(config: SFTConfig, tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
    """Tokenized rows (`input_ids`, `assistant_masks`) of every dialogue; bad dialogues are errors naming them."""
    records = []  # several sources are pooled, e.g. the kept answers of every rejection-sampling round so far
    for source in split_sources(config.dataset):
        records += world_dialogue_records(config) if source == WORLD else read_dialogue_records(source)
    if config.gatt_dataset:
        records += read_dialogue_records(config.gatt_dataset, default_loss_on="last", option="gatt_dataset")
    if not records:
        raise ValueError(f"dataset {config.dataset}: no dialogues")
    rows = []
    for record in records:
        contents = [str(message.get("content", "")) for message in record["messages"] if isinstance(message, dict)]
        if not config.packing and surely_longer_than(tokenizer, contents, config.max_length):
            raise ValueError(
                f"{record['where']}: {sum(map(len, contents))} characters, more tokens than max_length="
                f"{config.max_length} whatever the tokenizer"
            )
        try:
            row = tokenize_dialogue(tokenizer, record["messages"], loss_on=record["loss_on"])
        except (DialogueError, ValueError) as error:
            raise ValueError(f"{record['where']}: {error}") from None
        if len(row["input_ids"]) > config.max_length and not config.packing:
            raise ValueError(
                f"{record['where']}: {len(row['input_ids'])} tokens, longer than max_length={config.max_length}"
            )
        rows.append(row)
    return datasets.Dataset.from_list(rows)


def training_arguments(config: SFTConfig) -> trl.SFTConfig:
    """TRL's `SFTConfig` for the stage settings (docs/method.md §4 defaults)."""
    return trl.SFTConfig(
        **trainer_kwargs(config),
        max_length=config.max_length,
        packing=config.packing,
        num_train_epochs=config.num_train_epochs,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the total steps
    )


@releases_its_folder_on_error
def sft(config: SFTConfig, callbacks: list[TrainerCallback] | None = None) -> Path:
    """Run (or resume) SFT; returns `output_dir/final` (a full model: LoRA adapters merged when enabled)."""
    if (done := finished_run(config.output_dir, config)) is not None:
        return done
    model_dir = require_model_dir(config.model, "model")
    tokenizer = load_tokenizer(config.tokenizer or model_dir, config.chat_template)
    check_vocabulary(tokenizer, model_dir, "model")
    sources = announce_sources(
        "sft", {"dataset": config.dataset, "gatt_dataset": config.gatt_dataset}, config.world_seed
    )
    dataset = build_dataset(config, tokenizer)
    model = load_causal_lm(model_dir, "model", as_align_llama=config.as_align_llama)
    trainer = trl.SFTTrainer(
        model=model,
        args=training_arguments(config),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config.lora) if config.lora is not None else None,
        callbacks=[JsonlMetricsCallback(config.output_dir), *(callbacks or [])],
    )
    output_dir = Path(config.output_dir)
    finalize = adapter_finalizer(tokenizer, output_dir / "adapter", merge=config.merge_lora)
    return run_trainer(
        trainer, config, tokenizer, finalize=finalize, dialogues=len(dataset), lora=config.lora, data_sources=sources
    )
