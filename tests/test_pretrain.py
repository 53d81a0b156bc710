"""Pretraining: packing, the paper's optimizer settings, loss falls, exact resume after a kill."""

import json

import pytest
from transformers import TrainerCallback

from align.checkpoint import last_complete_checkpoint
from align.pretrain import PretrainConfig, build_dataset, pack_documents, pretrain, training_arguments
from align.tracking import read_metrics


def test_pack_documents_puts_eos_between_documents_and_drops_the_tail():
    rows = pack_documents(iter([[1, 5, 6], [1, 7], [1, 8, 9, 10]]), seq_length=4, eos_token_id=2)
    assert rows == [[1, 5, 6, 2], [1, 7, 2, 1], [8, 9, 10, 2]]
    assert pack_documents(iter([[1, 5]]), seq_length=4, eos_token_id=2) == []


def test_defaults_are_the_papers():
    args = training_arguments(PretrainConfig(output_dir="unused", dataset="world"))
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (0.9, 0.95, 1e-5)
    assert (args.weight_decay, args.max_grad_norm, args.learning_rate, args.warmup_steps) == (0.1, 1.0, 3e-4, 2000)
    assert args.lr_scheduler_type == "cosine_with_min_lr" and args.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    assert PretrainConfig(dataset="corpus.txt").seq_length == 4096
    with pytest.raises(ValueError, match="dataset: required"):
        PretrainConfig()


def world_config(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "run"),
        model_preset="tiny",
        dataset="world",
        tokenizer="data/tokenizer",
        seq_length=64,
        per_device_batch_size=4,
        max_steps=30,
        warmup_steps=3,
        lr=2e-3,
        logging_steps=1,
        save_steps=10,
        world_documents=600,
        seed=0,
    )
    return PretrainConfig(**{**values, **overrides})


def test_build_dataset_reads_local_text_and_jsonl(tmp_path, tokenizer):
    text = tmp_path / "docs.txt"
    text.write_text("Talo lives in Brindle.\n\nSeven is prime.\n" * 20)
    rows = build_dataset(world_config(tmp_path, dataset=str(text), seq_length=16), tokenizer)
    assert len(rows) > 5 and all(len(r) == 16 for r in rows["input_ids"])
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"body": "Talo has a pet owl."}) + "\n" for _ in range(40)))
    with pytest.raises(ValueError, match="no field 'text'"):
        build_dataset(world_config(tmp_path, dataset=str(jsonl), seq_length=16), tokenizer)
    assert len(build_dataset(world_config(tmp_path, dataset=str(jsonl), text_field="body", seq_length=16), tokenizer))
    with pytest.raises(FileNotFoundError, match="dataset: no file at"):
        build_dataset(world_config(tmp_path, dataset=str(tmp_path / "missing.txt")), tokenizer)
    with pytest.raises(ValueError, match="fewer tokens than one sequence"):
        build_dataset(world_config(tmp_path, dataset=str(text), seq_length=4000), tokenizer)


def test_loss_falls_on_the_world_corpus(tmp_path):
    final = pretrain(world_config(tmp_path, per_device_batch_size=8, lr=3e-3))
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    print("loss first 3 / last 3:", losses[:3], losses[-3:])
    assert len(losses) == 30
    assert sum(losses[-3:]) / 3 < 0.65 * sum(losses[:3]) / 3
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    assert (tmp_path / "run" / "DONE.json").is_file()


class KillAfterCheckpoint(TrainerCallback):
    """Stops the run right after a checkpoint is written, as a kill at that moment would."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def losses_by_step(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def test_resume_after_a_kill_gives_the_same_next_step_loss(tmp_path):
    pretrain(world_config(tmp_path / "straight", max_steps=14, save_steps=7))
    straight = losses_by_step(tmp_path / "straight" / "run")

    killed = world_config(tmp_path / "killed", max_steps=14, save_steps=7)
    with pytest.raises(KeyboardInterrupt):
        pretrain(killed, callbacks=[KillAfterCheckpoint()])
    assert last_complete_checkpoint(killed.output_dir).name == "checkpoint-7"
    assert max(losses_by_step(tmp_path / "killed" / "run")) == 7
    # A half-written later checkpoint (no trainer_state.json) must be ignored when resuming.
    (tmp_path / "killed" / "run" / "checkpoint-9").mkdir()
    pretrain(killed)
    resumed = losses_by_step(tmp_path / "killed" / "run")
    for step in (8, 9, 14):  # same data position, same lr, same weights: the same losses
        assert resumed[step] == pytest.approx(straight[step], abs=1e-5), step


def test_two_processes_equal_one_process_accumulating_two_micro_batches(tmp_path):
    """2 real processes (one gloo group) with batch b give the losses of 1 process with batch b and 2
    gradient-accumulation steps (same examples per step, equal token counts), and one final model."""
    from conftest import one_and_two_process_losses

    args = ["--config", "recipes/configs/pretrain/world_tiny.yaml", "--max_steps", "6", "--save_steps", "3"]
    one, two = one_and_two_process_losses(
        "recipes/pretrain.py", args + ["--world_documents", "800", "--logging_steps", "1"], tmp_path
    )
    assert (tmp_path / "two" / "final" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "two" / "DONE.json").read_text())["processes"] == 2
    assert sorted(two) == sorted(one) == [1, 2, 3, 4, 5, 6]
    for step, loss in one.items():
        assert two[step] == pytest.approx(loss, rel=1e-3), step


def test_packing_a_long_document_gives_the_same_rows_as_cutting_it_row_by_row():
    document = list(range(3, 3 + 10_000))
    rows = pack_documents(iter([document, [5, 6]]), seq_length=64, eos_token_id=2)
    stream = document + [2, 5, 6, 2]
    assert rows == [stream[i : i + 64] for i in range(0, len(stream) - 63, 64)]
