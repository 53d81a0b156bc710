"""Pretraining (docs/method.md §2): documents packed into full-length sequences, AdamW, cosine to 10% of peak.

Built on transformers' `Trainer` rather than a hand-written accelerate loop: the Trainer already resumes
exactly (optimizer, scheduler, RNG states, and the data position by skipping the batches it had consumed),
accumulates gradients, runs mixed precision, and launches under DDP / FSDP / DeepSpeed through accelerate.
This module only packs the data, builds the model and maps the paper's hyper-parameters onto it.

    pretrain(PretrainConfig(dataset="world", model_preset="small", max_steps=300))  -> output_dir/final
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import (
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from .checkpoint import check_vocabulary, finished_run, releases_its_folder_on_error, require_model_dir, run_trainer
from .config import TrainerStageConfig, trainer_kwargs
from .data import load_tokenizer
from .io import UnreadableRecord, read_text_lines, strict_records, table_records
from .modeling import PRESETS, AlignLlamaConfig, AlignLlamaForCausalLM, load_causal_lm
from .sources import announce_sources, require_source
from .tracking import JsonlMetricsCallback


@dataclass
class PretrainConfig(TrainerStageConfig):
    """Pretraining settings; defaults are the paper's (7B: sequences of 4096, peak lr 3e-4, 2000 warmup steps,
    cosine to 10%). The optimizer fields come from `TrainerStageConfig`."""

    shipped_configs = "pretrain"  # `--config NAME`: align/configs/pretrain/NAME.yaml (not a field)

    output_dir: str = field(default="runs/pretrain", metadata={"help": "run folder: checkpoints, metrics, final/"})
    model_preset: str = field(default="7b", metadata={"help": f"model size preset, one of {sorted(PRESETS)}"})
    init_from: str | None = field(
        default=None, metadata={"help": "continue from this checkpoint (e.g. GQA uptraining)"}
    )
    tokenizer: str = field(default="data/tokenizer", metadata={"help": "tokenizer directory"})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "required: a .txt (one document per line) / .jsonl / .json / .parquet file, a datasets name, "
            "or 'world' (the demo's synthetic corpus)"
        },
    )
    text_field: str = field(default="text", metadata={"help": "document field of JSON / Parquet / Hub data"})
    world_seed: int = field(default=0, metadata={"help": "seed of the synthetic world (dataset=world)"})
    world_documents: int = field(default=30000, metadata={"help": "documents drawn from the world (dataset=world)"})
    seq_length: int = field(default=4096, metadata={"help": "tokens per packed sequence"})
    per_device_batch_size: int = field(default=1, metadata={"help": "sequences per device and micro-step"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=2000, metadata={"help": "linear warmup steps"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_from is None and self.model_preset not in PRESETS:
            raise ValueError(f"model_preset: unknown preset {self.model_preset!r}, allowed: {sorted(PRESETS)}")
        require_source(self.dataset, "dataset", "the documents to pretrain on")
        for name in ("seq_length", "world_documents", "max_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: must be >= 0, got {self.warmup_steps}")


def read_documents(config: PretrainConfig) -> Iterator[str]:
    """The documents of `config.dataset`, as strings."""
    source = config.dataset
    if source == "world":
        from .world import World  # the world is only needed for the demo data

        yield from World(seed=config.world_seed).corpus(config.world_documents)
        return
    path = Path(source)
    if path.suffix == ".txt":
        if not path.is_file():
            raise FileNotFoundError(f"dataset: no file at {path}")
        for number, line in read_text_lines(path):
            if isinstance(line, UnreadableRecord):
                raise ValueError(f"{path}: line {number}: {line.reason}")
            if line.strip():
                yield line
        return
    name, records = table_records(source, "dataset")
    field, count = config.text_field, 0
    for where, record in strict_records(name, records):
        if field not in record:
            raise ValueError(f"{name}: {where}: no field {field!r} (fields {sorted(record)}); see text_field")
        if not isinstance(record[field], str):
            raise ValueError(f"{name}: {where}: field {field!r}: expected text, got {json.dumps(record[field])[:60]}")
        count += 1
        if record[field].strip():
            yield record[field]
    if not count:
        raise ValueError(f"dataset {name}: no documents (the file is empty)")


def pack_documents(documents: Iterator[list[int]], seq_length: int, eos_token_id: int) -> list[list[int]]:
    """Concatenate token lists, each followed by EOS, and cut the stream into full `seq_length` rows.

    The tail shorter than one row is dropped, as in the paper's packing: every row is full, no padding. Linear in
    the number of tokens: rows are sliced off at a moving start and the consumed part of the buffer is dropped
    once per document, so a long document is not copied once per row (eval/bench/packing.py).
    """
    rows, buffer = [], []
    for tokens in documents:
        buffer.extend(tokens)
        buffer.append(eos_token_id)
        start = 0
        while len(buffer) - start >= seq_length:
            rows.append(buffer[start : start + seq_length])
            start += seq_length
        del buffer[:start]
    return rows


def build_dataset(config: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
    """Packed `input_ids` / `labels` rows of `config.seq_length` tokens."""
    tokenized = (tokenizer(text).input_ids for text in read_documents(config))  # <s> in front of each document
    rows = pack_documents(tokenized, config.seq_length, tokenizer.eos_token_id)
    if not rows:
        raise ValueError(f"dataset {config.dataset}: fewer tokens than one sequence of seq_length={config.seq_length}")
    return datasets.Dataset.from_dict({"input_ids": rows, "labels": rows})


def build_model(config: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    """A fresh model of the preset sized to the tokenizer, or the checkpoint of `init_from`."""
    if config.init_from:
        init_from = require_model_dir(config.init_from, "init_from")
        check_vocabulary(tokenizer, init_from, "init_from")
        return load_causal_lm(init_from, "init_from")
    # Exactly the tokenizer's size, as Llama 2's 32,000: an id past the tokenizer would decode to nothing.
    model_config = AlignLlamaConfig.from_preset(
        config.model_preset,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(4096, config.seq_length),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    return AlignLlamaForCausalLM(model_config)


def training_arguments(config: PretrainConfig) -> TrainingArguments:
    """The paper's optimizer and schedule (docs/method.md §2) as `TrainingArguments`."""
    return TrainingArguments(**trainer_kwargs(config), warmup_steps=config.warmup_steps, dataloader_drop_last=True)


@releases_its_folder_on_error
def pretrain(config: PretrainConfig, callbacks: list[TrainerCallback] | None = None) -> Path:
    """Run (or resume) pretraining; returns the folder of the final model (`output_dir/final`).

    `callbacks` are extra Trainer callbacks (early stopping, custom logging, ...).
    """
    if (done := finished_run(config.output_dir, config)) is not None:
        return done
    tokenizer = load_tokenizer(config.tokenizer)
    sources = announce_sources("pretrain", {"dataset": config.dataset}, config.world_seed)
    dataset = build_dataset(config, tokenizer)
    model = build_model(config, tokenizer)
    trainer = Trainer(
        model=model,
        args=training_arguments(config),
        train_dataset=dataset,
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=[JsonlMetricsCallback(config.output_dir), *(callbacks or [])],
    )
    return run_trainer(trainer, config, tokenizer, sequences=len(dataset), data_sources=sources)
