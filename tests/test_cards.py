"""Model cards from what a run knows: the real architecture, the data files with their hashes, the settings, the
metrics that exist, and a loading snippet that works (align.cards)."""

import json
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer

from align.cards import model_card, run_card
from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM
from align.sources import describe_source, file_hash


def assert_no_empty_section(card: str) -> None:
    """Every `## ` section of `card` holds something before the next one."""
    sections = re.split(r"^## .*$", card, flags=re.M)[1:]
    headers = re.findall(r"^## .*$", card, flags=re.M)
    for header, body in zip(headers, sections):
        assert body.strip(), f"empty section {header!r}"
    assert "| metric | value |\n|---|---|\n\n" not in card + "\n" and not card.rstrip().endswith("|---|---|")


def run_snippets(card: str) -> list:
    """Run each Python block of the card's "How to load it" section; returns the objects named `model`."""
    loading = card.split("## How to load it", 1)[1].split("\n## ", 1)[0]
    models = []
    for block in re.findall(r"```python\n(.*?)```", loading, flags=re.S):
        scope: dict = {}
        exec(block, scope)
        models.append(scope["model"])
    return models


def stage_folder(tmp_path: Path, model, data_file: Path) -> Path:
    """A finished stage as align leaves it: final/ (the model), DONE.json (numbers, data sources), run_config.json."""
    run = tmp_path / "run"
    model.save_pretrained(run / "final")
    AutoTokenizer.from_pretrained(Path(__file__).parents[1] / "data" / "tokenizer").save_pretrained(run / "final")
    (run / "DONE.json").write_text(json.dumps({"final": str(run / "final"), "train_loss": 1.25, "steps": 40,
                                               "data_sources": {"dataset": [describe_source(str(data_file))]}}))  # fmt: skip
    (run / "run_config.json").write_text(json.dumps({"lr": 2e-5, "num_train_epochs": 2, "dataset": str(data_file)}))
    return run


def test_a_card_of_aligns_decoder_names_its_data_with_hashes_settings_metrics_and_loads(tmp_path):
    data = tmp_path / "my_dialogues.jsonl"
    data.write_text('{"messages": []}\n')
    model = AlignLlamaForCausalLM(AlignLlamaConfig.from_preset("tiny", vocab_size=64, max_position_embeddings=32))
    run = stage_folder(tmp_path, model, data)
    card = run_card(run, "sft", "meta-llama/Llama-2-7b-hf")
    assert "tags: [align, rlhf, align_llama, sft, llama-2]" in card and "base_model: meta-llama/Llama-2-7b-hf" in card
    assert f"{data} (sha256 {file_hash(data)})" in card
    assert "| train_loss | 1.25 |" in card and '"num_train_epochs": 2' in card
    assert "pip install align-rlhf" in card and "trust_remote_code=True" in card
    assert f"align export --model \"{run / 'final'}\" --output_dir llama-dir" in card
    assert_no_empty_section(card)
    ids = torch.tensor([[1, 2, 3]])
    for loaded in run_snippets(card):  # import align, then transformers alone with the folder's own code
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_a_users_qwen2_reward_model_is_carded_as_what_it_is(tmp_path):
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0)  # fmt: skip
    data = tmp_path / "prefs.jsonl"
    data.write_text("{}\n")
    run = stage_folder(tmp_path, Qwen2ForSequenceClassification(config), data)
    card = run_card(run, "reward_model", str(tmp_path / "my-qwen"))
    assert "tags: [align, rlhf, qwen2, reward_model]" in card
    assert "llama-2" not in card and "align's decoder" not in card and "Llama" not in card.split("## How")[1]
    assert "pipeline_tag: text-classification" in card and "A Qwen2 reward model" in card
    assert "no align needed" in card and "import align" not in card and "trust_remote_code" not in card
    assert "base_model" not in card  # a local folder is named in the text, not as a Hub id
    assert_no_empty_section(card)
    (loaded,) = run_snippets(card)
    assert type(loaded).__name__ == "Qwen2ForSequenceClassification"


def test_a_card_without_metrics_or_data_has_no_such_sections(tmp_path):
    model = AlignLlamaForCausalLM(AlignLlamaConfig.from_preset("tiny", vocab_size=64, max_position_embeddings=32))
    model.save_pretrained(tmp_path / "given")
    card = model_card(tmp_path / "given", title="me/x @ round-0-sft", where='"me/x", revision="round-0-sft"',
                      stage="round-0-sft", base=None, metrics={})  # fmt: skip
    assert "## Metrics" not in card and "## Training data" not in card and "## Settings" not in card
    assert "## How to load it" in card and 'from_pretrained("me/x", revision="round-0-sft")' in card
    assert_no_empty_section(card)


def test_a_lora_adapters_card_loads_it_with_peft(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = AlignLlamaForCausalLM(AlignLlamaConfig.from_preset("tiny", vocab_size=64, max_position_embeddings=32))
    base.save_pretrained(tmp_path / "base")
    adapter = get_peft_model(AlignLlamaForCausalLM.from_pretrained(tmp_path / "base"), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    adapter.save_pretrained(tmp_path / "adapter")
    card = model_card(tmp_path / "adapter", title="adapter", where=f'"{tmp_path / "adapter"}"', metrics={})
    assert "library_name: peft" in card and f"A LoRA adapter (peft) on `{tmp_path / 'base'}`" in card
    assert "tags: [align, rlhf, align_llama, llama-2]" in card and "A Llama 2 (align's decoder) LoRA adapter" in card
    AutoTokenizer.from_pretrained(Path(__file__).parents[1] / "data" / "tokenizer").save_pretrained(tmp_path / "base")
    (loaded,) = run_snippets(card)
    assert type(loaded).__name__ == "PeftModel" and loaded.peft_config["default"].r == 2
