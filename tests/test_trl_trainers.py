"""TRL's trainers take align's model and data as they come: two steps of each on the `tiny` preset.

The contract a user relies on when mixing align with TRL (issue 18): `RewardTrainer` on `load_preferences` output
of every format (the `margin` column is a number), `DPOTrainer`, `GRPOTrainer` and `RLOOTrainer` with
`AlignLlamaForCausalLM` and the shipped tokenizer. The upstream check (`.ci/upstream`) runs these on the newest
releases.
"""

import os

import datasets
import pytest
import torch
import trl

from align.data import load_preferences, load_tokenizer
from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM, AlignLlamaForSequenceClassification
from conftest import FIXTURES, ROOT

PREFS = os.path.join(FIXTURES, "preferences")
COMMON = dict(
    max_steps=2,
    per_device_train_batch_size=2,
    learning_rate=1e-3,
    logging_steps=1,
    save_strategy="no",
    report_to=[],
    use_cpu=True,
    bf16=False,
    disable_tqdm=True,
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(os.path.join(ROOT, "data", "tokenizer"))


def tiny(cls, tokenizer, **overrides):
    """A fresh `tiny` model sized to the shipped tokenizer (the preset's vocabulary is that tokenizer's)."""
    config = AlignLlamaConfig.from_preset(
        "tiny", pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **overrides
    )
    assert config.vocab_size == len(tokenizer)
    torch.manual_seed(0)
    return cls(config)


def changed_parameters(model, before: dict) -> list[str]:
    return [name for name, p in model.named_parameters() if not torch.equal(p.detach().cpu(), before[name])]


def snapshot(model) -> dict:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    "file, format",
    [
        ("trl_conversational.json", "trl"),
        ("hh_rlhf.jsonl", "hh-rlhf"),
        ("pku_saferlhf.jsonl", "pku-saferlhf"),
        ("ultrafeedback.jsonl", "ultrafeedback"),
    ],
)
def test_reward_trainer_on_load_preferences_output(file, format, tokenizer, tmp_path):
    pairs = load_preferences(os.path.join(PREFS, file), format=format, on_error="skip")
    assert all(isinstance(m, float) for m in pairs["margin"])
    model = tiny(AlignLlamaForSequenceClassification, tokenizer, num_labels=1)
    before = snapshot(model)
    trainer = trl.RewardTrainer(
        model=model,
        args=trl.RewardConfig(output_dir=str(tmp_path), max_length=256, **COMMON),
        train_dataset=pairs.select_columns(["prompt", "chosen", "rejected", "margin"]),
        processing_class=tokenizer,
    )
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert "score.weight" in changed_parameters(model, before)


def test_dpo_trainer_with_align_model(tokenizer, tmp_path):
    """Given a checkpoint path, as TRL's docs do: TRL loads the policy and its reference model itself."""
    pairs = load_preferences(os.path.join(PREFS, "trl_conversational.json"))
    model = tiny(AlignLlamaForCausalLM, tokenizer)
    model.save_pretrained(tmp_path / "policy")
    before = snapshot(model)
    trainer = trl.DPOTrainer(
        model=str(tmp_path / "policy"),
        args=trl.DPOConfig(output_dir=str(tmp_path / "out"), max_length=256, **COMMON),
        train_dataset=pairs.select_columns(["prompt", "chosen", "rejected"]),
        processing_class=tokenizer,
    )
    assert isinstance(trainer.model, AlignLlamaForCausalLM) and isinstance(trainer.ref_model, AlignLlamaForCausalLM)
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert len(changed_parameters(trainer.model, before)) == len(before)


def answer_length_reward(completions, **kwargs) -> list[float]:
    """A rule-based reward: shorter answers score higher (any callable works as a TRL reward function)."""
    return [-len(c[0]["content"]) / 100 for c in completions]


@pytest.mark.parametrize("trainer_name", ["GRPO", "RLOO"])
def test_online_trainers_with_align_model(trainer_name, tokenizer, tmp_path):
    config_class, trainer_class = getattr(trl, f"{trainer_name}Config"), getattr(trl, f"{trainer_name}Trainer")
    prompts = datasets.Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}]} for i in range(4)]
    )
    model = tiny(AlignLlamaForCausalLM, tokenizer)
    model.save_pretrained(tmp_path / "policy")
    reward_model = tiny(AlignLlamaForSequenceClassification, tokenizer, num_labels=1)
    before = snapshot(model)
    trainer = trainer_class(
        model=str(tmp_path / "policy"),
        reward_funcs=[reward_model, answer_length_reward],
        args=config_class(
            output_dir=str(tmp_path / "out"),
            num_generations=2,
            max_completion_length=8,
            gradient_checkpointing=False,
            **COMMON,
        ),
        train_dataset=prompts,
        processing_class=tokenizer,
        reward_processing_classes=[tokenizer, None],
    )
    result = trainer.train()
    assert result.global_step == 2
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert logged and all(torch.isfinite(torch.tensor(entry["reward"])) for entry in logged)
    assert isinstance(trainer.model, AlignLlamaForCausalLM) and changed_parameters(trainer.model, before)
