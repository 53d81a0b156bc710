"""Reward models on the world: they learn the preference, by strength as in the paper; mix; bad input."""

import logging

import datasets
import pytest

import align.reports.reward_model
from align.data import PreferenceDataError, load_preferences, load_tokenizer
from align.modeling import AlignLlamaForSequenceClassification
from align.reward_model import RewardModelConfig, held_out_pairs, sample_for_mix, tokenize_pairs, train_reward_model
from align.rewards import score
from align.world import World

report = vars(align.reports.reward_model)


def test_both_models_beat_chance_and_clear_pairs_beat_negligible_ones(reward_models, tmp_path):
    reports = {
        target: report["evaluate_reward_model"](path, held_out_pairs(200), tmp_path / target, target)
        for target, path in reward_models.items()
    }
    print("\n" + report["format_table"](reports))
    own = {"helpfulness": "helpfulness_prompts", "safety": "safety_prompts"}
    own_rows = {
        f"{t[:6]} RM, {own[t]}": {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith(own[t] + "/")}
        for t, m in reports.items()
    }
    print(report["format_table"](own_rows))
    for target, metrics in reports.items():
        assert metrics["accuracy"] > 0.6, target
        assert (tmp_path / target / "accuracy_by_strength.png").is_file()
    # Each model on its own test set (the paper's Meta Helpful / Meta Safety, Table 8): clearly above chance
    # (about 100 decided pairs each: 0.6 is over two standard errors above 0.5; the bar was 0.65 before the
    # world padded answers of every quality and gave off-topic answers every task's form, which made the pairs
    # harder), and far better on clear-cut pairs than on negligible ones.
    for name, metrics in own_rows.items():
        assert metrics["accuracy/decided"] > 0.6, name
        assert metrics["accuracy/significantly_better"] > metrics["accuracy/negligibly_better"], name


def test_safety_model_prefers_refusals_and_helpfulness_model_punishes_false_refusals(reward_models):
    world = World(seed=0)
    prompts = world.prompts(80, "test", mix={"harmful": 0.5, "borderline": 0.5})
    harmful = [p for p in prompts if p.kind == "harmful"]
    borderline = [p for p in prompts if p.kind == "borderline"]

    def rewards(target, chosen_prompts, quality):
        model = AlignLlamaForSequenceClassification.from_pretrained(reward_models[target])
        answers = [world.respond(p, quality) for p in chosen_prompts]
        return score(model, load_tokenizer(reward_models[target]), [p.messages for p in chosen_prompts], answers).raw

    refusal_wins = (rewards("safety", harmful, "good") > rewards("safety", harmful, "harmful")).float().mean()
    helpful_wins = (
        (rewards("helpfulness", borderline, "good") > rewards("helpfulness", borderline, "refusal")).float().mean()
    )
    print(
        f"safety RM: refusal > harmful compliance on {refusal_wins:.2f} of harmful prompts; helpfulness RM: "
        f"helpful answer > false refusal on {helpful_wins:.2f} of borderline prompts"
    )
    assert refusal_wins > 0.8 and helpful_wins > 0.8


def test_data_mix_shares():
    own = datasets.Dataset.from_dict({"x": list(range(90))})
    other = datasets.Dataset.from_dict({"x": list(range(1000, 1100))})
    mixed_in = sample_for_mix(len(own), other, 0.1, seed=0)
    assert len(mixed_in) == 10 and all(x >= 1000 for x in mixed_in["x"])  # safety RM: 90 / 10
    assert len(set(mixed_in["x"])) == 10
    assert len(sample_for_mix(len(own), other, 0.5, seed=0)) == 90  # helpfulness RM: an equal share
    assert len(sample_for_mix(len(own), other, 0.9, seed=0)) == 100  # as much as there is
    world = dict(helpfulness_data="world", safety_data="world")
    assert RewardModelConfig(model="m", target="safety", **world).other_share == 0.1
    assert RewardModelConfig(model="m", **world).other_share == 0.5


def test_long_pairs_are_counted_skips_or_errors(tokenizer, caplog):
    pairs = load_preferences(
        [
            {"prompt": "What is 2 plus 2?", "chosen": "4", "rejected": "5", "strength": "better"},
            {"prompt": "Tell me a story. " * 60, "chosen": "Once.", "rejected": "No.", "strength": "slightly_better"},
        ]
    )
    with caplog.at_level(logging.WARNING):
        rows = tokenize_pairs(pairs, tokenizer, "small", max_length=64)
    assert len(rows) == 1 and rows[0]["margin"] == pytest.approx(2 / 3)
    assert "pairs: skipped 1 of 2 pairs longer than max_length=64" in caplog.text
    # Over max_length by its characters alone (more than 64 of the longest token): refused before tokenizing.
    with pytest.raises(PreferenceDataError, match=r"pair 1: \d+ characters, more tokens than max_length=64"):
        tokenize_pairs(pairs, tokenizer, "small", max_length=64, on_long="raise")


def test_bad_records_and_configs_are_clear_errors(tmp_path):
    with pytest.raises(PreferenceDataError, match="record 0: field 'strength': unknown strength 'huge'"):
        load_preferences([{"prompt": "p", "chosen": "a", "rejected": "b", "strength": "huge"}])
    with pytest.raises(PreferenceDataError, match="record 0: field 'rejected': identical to chosen"):
        load_preferences([{"prompt": "p", "chosen": "same", "rejected": "same"}])
    with pytest.raises(ValueError, match="target: expected one of"):
        RewardModelConfig(model="m", target="harmlessness", helpfulness_data="world", safety_data="world")
    with pytest.raises(ValueError, match="margin_scheme: expected one of"):
        RewardModelConfig(model="m", margin_scheme="medium", helpfulness_data="world", safety_data="world")
    with pytest.raises(FileNotFoundError, match="model: .* does not exist"):
        train_reward_model(RewardModelConfig(model=str(tmp_path / "missing"), output_dir=str(tmp_path / "rm"),
                                             helpfulness_data="world", safety_data="world"))  # fmt: skip


def test_lora_reward_model_trains_adapters_and_merges_to_the_same_scores(chat_model, tmp_path):
    """A LoRA fine-tune of a chat checkpoint into a reward model: the adapter folder (base + adapters + the
    trained score head) and the merged final model give the same rewards."""
    from peft import PeftModel

    final = train_reward_model(
        RewardModelConfig(
            model=str(chat_model), target="helpfulness", output_dir=str(tmp_path / "rm"), world_pairs=60,
            helpfulness_data="world", safety_data="world",
            max_length=256, lr=1e-3, per_device_batch_size=8, gradient_accumulation_steps=1, save_steps=1000,
            lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        )
    )  # fmt: skip
    tokenizer = load_tokenizer(final)
    base = AlignLlamaForSequenceClassification.from_pretrained(chat_model, num_labels=1)
    base.config.pad_token_id = tokenizer.pad_token_id
    adapted = PeftModel.from_pretrained(base, tmp_path / "rm" / "adapter").eval()
    merged = AlignLlamaForSequenceClassification.from_pretrained(final).eval()
    pairs = held_out_pairs(20)
    prompts, answers = list(pairs["prompt"]), [c[0]["content"] for c in pairs["chosen"]]
    merged_scores = score(merged, tokenizer, prompts, answers).raw
    adapter_scores = score(adapted, tokenizer, prompts, answers).raw
    assert merged_scores.abs().sum() > 0
    assert merged_scores.tolist() == pytest.approx(adapter_scores.tolist(), abs=1e-4)


def test_two_processes_equal_one_process_accumulating_two_micro_batches(chat_model, tmp_path):
    """2 processes with batch b follow the loss curve of 1 process with batch b and 2 accumulation steps."""
    from conftest import one_and_two_process_losses

    args = ["--model", str(chat_model), "--target", "helpfulness", "--world_pairs", "80", "--max_length", "256"]
    args += ["--helpfulness_data", "world", "--safety_data", "world"]
    args += ["--num_train_epochs", "1", "--per_device_batch_size", "4", "--logging_steps", "1", "--lr", "1e-3"]
    one, two = one_and_two_process_losses("recipes/reward_model.py", args + ["--save_steps", "1000"], tmp_path)
    assert sorted(two) == sorted(one) and len(one) >= 4
    for step, loss in one.items():
        assert two[step] == pytest.approx(loss, rel=1e-3), step
