"""SFT: exact answer-only labels through TRL, GAtt last-answer labels, gains over pretraining, LoRA, errors."""

import json

import pytest
import torch
from peft import PeftModel

from align.data import load_tokenizer, tokenize_dialogue
from align.modeling import AlignLlamaForCausalLM
from align.sft import SFTConfig, build_dataset, sft
from align.world import World
from align.world.evaluation import evaluate_policy

DIALOGUE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 plus 2?"},
    {"role": "assistant", "content": "2 plus 2 is 4."},
    {"role": "user", "content": "Where does Talo live?"},
    {"role": "assistant", "content": "Talo lives in Brindle."},
]


def sft_config(tmp_path, model, **overrides):
    values = dict(
        model=str(model),
        output_dir=str(tmp_path / "sft"),
        dataset="world",
        world_dialogues=400,
        max_length=512,
        num_train_epochs=1,
        lr=3e-3,
        per_device_batch_size=8,
        gradient_accumulation_steps=1,
        logging_steps=5,
        save_steps=1000,
        warmup_ratio=0.05,
    )
    return SFTConfig(**{**values, **overrides})


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_labels_given_to_trl_cover_exactly_the_answers(tmp_path, pretrained):
    data = write_jsonl(tmp_path / "sft.jsonl", [{"messages": DIALOGUE}])
    gatt = write_jsonl(tmp_path / "gatt.jsonl", [{"messages": DIALOGUE}])
    tokenizer = load_tokenizer(pretrained)
    rows = build_dataset(sft_config(tmp_path, pretrained, dataset=str(data), gatt_dataset=str(gatt)), tokenizer)
    plain, ghost = rows[0], rows[1]
    assert plain["assistant_masks"] == tokenize_dialogue(tokenizer, DIALOGUE)["assistant_masks"]
    trained = tokenizer.decode([t for t, m in zip(plain["input_ids"], plain["assistant_masks"]) if m])
    assert trained == "2 plus 2 is 4. </s> Talo lives in Brindle. </s>"
    ghost_trained = tokenizer.decode([t for t, m in zip(ghost["input_ids"], ghost["assistant_masks"]) if m])
    assert ghost_trained == "Talo lives in Brindle. </s>"  # Ghost Attention: the last answer only

    # What TRL's trainer actually trains on: labels are -100 exactly where the mask is 0.
    import trl

    from align.sft import training_arguments

    config = sft_config(tmp_path, pretrained, dataset=str(data), gatt_dataset=str(gatt), max_steps=1)
    trainer = trl.SFTTrainer(
        model=AlignLlamaForCausalLM.from_pretrained(pretrained),
        args=training_arguments(config),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    for row, prepared in zip(rows, trainer.train_dataset):
        expected = [t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"])]
        assert prepared["labels"] == expected


def test_sft_beats_the_pretrained_model_on_held_out_prompts(tmp_path, pretrained):
    final = sft(sft_config(tmp_path, pretrained, num_train_epochs=2))
    tokenizer = load_tokenizer(final)
    prompts = World(seed=0).prompts(60, "test", mix={"arithmetic": 0.4, "fact": 0.4, "list": 0.2})
    before, _ = evaluate_policy(AlignLlamaForCausalLM.from_pretrained(pretrained), tokenizer, prompts)
    after, answers = evaluate_policy(AlignLlamaForCausalLM.from_pretrained(final), tokenizer, prompts)
    print(
        f"gold helpfulness on held-out prompts: pretrained {before['gold_helpfulness']:.3f} -> "
        f"SFT {after['gold_helpfulness']:.3f}; e.g. {answers[:3]}"
    )
    assert after["gold_helpfulness"] > before["gold_helpfulness"] + 0.15
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert losses[-1] < losses[0]


def test_lora_trains_only_adapters_and_merges_to_the_same_logits(tmp_path, pretrained):
    config = sft_config(
        tmp_path,
        pretrained,
        max_steps=4,
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    )
    base = AlignLlamaForCausalLM.from_pretrained(pretrained)
    final = sft(config)
    adapted = PeftModel.from_pretrained(
        AlignLlamaForCausalLM.from_pretrained(pretrained), tmp_path / "sft" / "adapter"
    )
    merged = AlignLlamaForCausalLM.from_pretrained(final)
    # Only LoRA weights changed: the merged model differs from the base exactly in the adapted projections.
    for name, weight in merged.state_dict().items():
        changed = not torch.equal(weight, base.state_dict()[name])
        assert changed == (name.endswith(("q_proj.weight", "v_proj.weight"))), name
    ids = torch.randint(3, 500, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted.eval()(ids).logits, atol=1e-5, rtol=0)


def test_bad_inputs_are_clear_errors(tmp_path, pretrained):
    with pytest.raises(FileNotFoundError, match="model: .*missing does not exist"):
        sft(sft_config(tmp_path, tmp_path / "missing"))
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match=r"empty.jsonl: no dialogues \(the file is empty\)"):
        sft(sft_config(tmp_path, pretrained, dataset=str(empty)))
    no_answer = write_jsonl(tmp_path / "no_answer.jsonl", [{"messages": DIALOGUE}, {"messages": DIALOGUE[:2]}])
    with pytest.raises(ValueError, match=r"no_answer.jsonl: record 1 \(line 2\): dialogue: has no assistant turn"):
        sft(sft_config(tmp_path, pretrained, dataset=str(no_answer)))
    with pytest.raises(ValueError, match=r"lora: unknown keys \['rank'\]"):
        sft_config(tmp_path, pretrained, lora={"rank": 8})
    with pytest.raises(ValueError, match="model: required"):
        SFTConfig()


def test_packing_keeps_answer_only_labels(tmp_path, pretrained):
    """With packing, dialogues are concatenated into max_length rows and keep their own masks."""
    import trl

    from align.sft import training_arguments

    config = sft_config(tmp_path, pretrained, packing=True, max_length=256, world_dialogues=60, max_steps=2)
    tokenizer = load_tokenizer(pretrained)
    rows = build_dataset(config, tokenizer)
    trainer = trl.SFTTrainer(
        model=AlignLlamaForCausalLM.from_pretrained(pretrained),
        args=training_arguments(config),
        train_dataset=rows,
        processing_class=tokenizer,
    )
    packed = trainer.train_dataset
    assert len(packed) < len(rows)  # several dialogues per row
    trained_tokens = sum(sum(label != -100 for label in row["labels"]) for row in packed)
    assert trained_tokens == sum(sum(row["assistant_masks"]) for row in rows)
    trainer.train()


def test_two_processes_equal_one_process_accumulating_two_micro_batches(tmp_path, pretrained):
    """2 processes with batch b follow the loss curve of 1 process with batch b and 2 accumulation steps: the
    same dialogues per step, the loss averaged over their answer tokens across processes."""
    from conftest import one_and_two_process_losses

    args = ["--model", str(pretrained), "--dataset", "world", "--world_dialogues", "64", "--num_train_epochs", "1"]
    args += ["--max_length", "512"]
    args += ["--per_device_batch_size", "4", "--logging_steps", "1", "--lr", "3e-3", "--save_steps", "1000"]
    one, two = one_and_two_process_losses("recipes/sft.py", args, tmp_path)
    assert sorted(two) == sorted(one) == list(range(1, 9))
    for step, loss in one.items():
        assert two[step] == pytest.approx(loss, rel=1e-3), step
