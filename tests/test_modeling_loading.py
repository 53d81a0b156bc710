"""The checkpoints users bring (align.modeling.loading): a Llama-3-style Llama, Qwen2 and Mistral, each through
`align sft` -> `align reward-model` -> `align rejection-sampling` -> `align ppo` -> `align round 1` with the
user's files (Qwen2's SFT data a save_to_disk folder, its prompts parquet), kept in its own architecture,
config and chat template; and one-line refusals."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_cards import assert_no_empty_section

from align.cli import main as align
from align.data.tokenizer import SAVED_TOKENIZER_CHANGES
from align.modeling import UnsupportedModelError, load_causal_lm, load_sequence_classifier
from align.sources import file_hash

ROOT = Path(__file__).resolve().parents[1]


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


# What the stages may change in a saved config: the pad id the tokenizer pads with (TRL's trainers set it on the
# model when the checkpoint had none), a reward model's head, and transformers' bookkeeping.
CHANGED_BY_TRAINING = {"pad_token_id", "architectures", "id2label", "label2id", "dtype", "transformers_version"}


@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral"])
def test_a_users_checkpoint_goes_through_every_stage_in_its_own_architecture(family, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from user_project import write_stage_yamls, write_user_project

    monkeypatch.chdir(tmp_path)
    data = write_user_project(tmp_path / "project", family)
    stages = write_stage_yamls(tmp_path / "configs")
    user = Path(data["model"])
    if family == "qwen2":  # data as users hold it: a datasets save_to_disk folder and a parquet file
        import datasets

        from align.io import read_jsonl

        datasets.Dataset.from_list(read_jsonl(data["sft"])).save_to_disk("sft_data")
        datasets.Dataset.from_list(read_jsonl(data["prompts"])).to_parquet("prompts.parquet")
        data = {**data, "sft": "sft_data", "prompts": "prompts.parquet"}
    tiny = ["--max_length", "256", "--per_device_batch_size", "4", "--gradient_accumulation_steps", "1",
            "--save_steps", "1000", "--logging_steps", "5"]  # fmt: skip
    align(["sft", "--model", str(user), "--dataset", data["sft"], "--output_dir", "sft", "--num_train_epochs", "2",
           "--lr", "3e-3", *tiny])  # fmt: skip
    for target, held_out in (("helpfulness", "helpfulness_eval"), ("safety", "safety_eval")):
        align(["reward-model", "--model", "sft/final", "--target", target, "--output_dir", f"rm_{target}",
               "--helpfulness_data", data["helpfulness"], "--safety_data", data["safety"], "--eval_data",
               data[held_out], "--num_train_epochs", "1", "--lr", "1e-3", *tiny])  # fmt: skip
    rms = ["--helpfulness_rm", "rm_helpfulness/final", "--safety_rm", "rm_safety/final", "--prompts", data["prompts"]]
    align(["rejection-sampling", "--policy", "sft/final", *rms, "--output_dir", "rs", "--num_samples", "2",
           "--max_new_tokens", "12", "--finetune_epochs", "1", "--finetune_batch_size", "4", "--max_length", "256"])  # fmt: skip
    # PPO with a chunk smaller than a mini-batch's positions: the chunked path runs.
    align(["ppo", "--policy", "rs/sft/final", *rms, "--output_dir", "ppo", "--num_iterations", "2", "--batch_size",
           "4", "--mini_batch_size", "2", "--response_length", "10", "--forward_batch_size", "4",
           "--logits_chunk_tokens", "7"])  # fmt: skip
    align(["dpo", "--model", "sft/final", "--dataset", data["helpfulness"], "--output_dir", "dpo", "--max_steps", "2",
           "--lr", "1e-4", *tiny])  # fmt: skip
    align(["round", "1", "--name", "mine", "--runs_dir", "runs", "--sft_model", "sft/final",
           "--helpfulness_rm", "rm_helpfulness/final", "--safety_rm", "rm_safety/final", "--prompts", data["prompts"],
           "--eval_prompts", data["eval_prompts"], "--helpfulness_eval_pairs", data["helpfulness_eval"],
           "--safety_eval_pairs", data["safety_eval"], "--helpfulness_pairs", data["helpfulness_rounds"],
           "--safety_pairs", data["safety_rounds"], "--helpfulness_rm_config", stages["rm"],
           "--safety_rm_config", stages["rm"], "--rm_update_config", stages["rm"],
           "--rejection_sampling_config", stages["rs"], "--ppo_config", stages["ppo"], "--ppo_from_round", "1"])  # fmt: skip

    original = config_of(user)
    policies = [Path(p) for p in ("sft/final", "rs/sft/final", "ppo/final", "dpo/final", "runs/mine/round-1/ppo/final",
                                  "runs/mine/round-1/rejection_sampling/sft/final")]  # fmt: skip
    reward_models = [Path(p) for p in ("rm_helpfulness/final", "rm_safety/final",
                                       "runs/mine/round-1/reward_model_helpfulness/final")]  # fmt: skip
    for folder in policies + reward_models:
        saved = config_of(folder)
        assert saved["model_type"] == original["model_type"], folder
        changed = {key for key in original.keys() | saved.keys() if original.get(key) != saved.get(key)}
        assert changed <= CHANGED_BY_TRAINING, (folder, {k: (original.get(k), saved.get(k)) for k in changed})
        if original.get("pad_token_id") is not None:
            assert saved["pad_token_id"] == original["pad_token_id"]
        assert (folder / "chat_template.jinja").read_text() == (user / "chat_template.jinja").read_text()
        # The tokenizer's and generation settings come out as the user's, apart from what docs/model.md lists
        # (a pad token, where the user's has none).
        for name, allowed in SAVED_TOKENIZER_CHANGES.items():
            if not (folder / name).is_file() and name == "generation_config.json" and folder in reward_models:
                continue  # a sequence classifier has no generation settings
            theirs, ours = json.loads((user / name).read_text()), json.loads((folder / name).read_text())
            changed = {key for key in theirs.keys() | ours.keys() if theirs.get(key) != ours.get(key)}
            assert changed <= allowed, (folder, name, {k: (theirs.get(k), ours.get(k)) for k in changed})
            assert all(theirs.get(key) is None for key in changed), (folder, name)
    # Loadable by transformers' own classes, no align code in the folder.
    policy = AutoModelForCausalLM.from_pretrained("runs/mine/round-1/ppo/final")
    reward = AutoModelForSequenceClassification.from_pretrained("rm_helpfulness/final")
    for model in (policy, reward):
        assert type(model).__module__.startswith(f"transformers.models.{original['model_type']}.")
    assert not list(Path("runs/mine/round-1/ppo/final").glob("*.py"))
    assert policy.config.rope_parameters == AutoModelForCausalLM.from_pretrained(user).config.rope_parameters
    if family == "llama3":
        assert policy.config.rope_parameters["rope_type"] == "llama3" and policy.config.tie_word_embeddings
        assert policy.config.eos_token_id == original["eos_token_id"] and len(original["eos_token_id"]) == 2
        assert torch.equal(policy.lm_head.weight, policy.model.embed_tokens.weight)  # still tied
        tuned = AutoModelForCausalLM.from_pretrained("dpo/final")
        assert torch.equal(tuned.lm_head.weight, tuned.model.embed_tokens.weight)  # DPO kept them tied too
    metrics = json.loads(Path("runs/mine/round-1/evaluate/metrics.json").read_text())
    assert metrics["prompts"] == 7 and 0 <= metrics["win_rate_vs_sft"] <= 1
    # The runs' cards say what the model is (its own family, loadable by transformers alone) and what it saw.
    for run, pipeline in (("sft", "text-generation"), ("rm_helpfulness", "text-classification")):
        card = Path(run, "README.md").read_text()
        assert f"tags: [align, rlhf, {original['model_type']}, " in card and "llama-2" not in card, card[:400]
        assert f"pipeline_tag: {pipeline}" in card and "no align needed" in card
        assert_no_empty_section(card)
    helpfulness = Path(data["helpfulness"])
    assert f"{helpfulness} (sha256 {file_hash(helpfulness)})" in Path("rm_helpfulness", "README.md").read_text()
    for run in ("sft", "rm_helpfulness", "rs", "ppo", "dpo"):  # no demo-world settings in runs on the user's data
        assert not [key for key in json.loads(Path(run, "run_config.json").read_text()) if key.startswith("world_")]
    assert '"world_' not in Path("runs/mine/manifest.json").read_text()
    report = Path("runs/mine/report.md").read_text()  # the given models are marked as given, not as trained
    assert "| 0 (SFT) | sft (given), reward_model_helpfulness (given)" in report
    assert "| 0 | sft | given (--sft_model), not trained |" in report


def test_a_llama3_checkpoint_moves_into_align_llama_only_when_asked(tmp_path, capfd):
    """`as_align_llama`: the user's Llama 3 network (its llama3 RoPE included) in align's model, same logits;
    a Qwen2 checkpoint is refused with one line."""
    from user_project import family_model, texts

    llama, _ = family_model("llama3", texts())
    llama.eval().save_pretrained(tmp_path / "llama3")
    capfd.readouterr()
    ours = load_causal_lm(tmp_path / "llama3", as_align_llama=True).eval()
    assert ours.config.model_type == "align_llama" and ours.config.rope_parameters["rope_type"] == "llama3"
    assert "can yield errors" not in capfd.readouterr().err  # on purpose: no architecture warning
    ids = torch.randint(0, 600, (2, 100))  # past the original 64 positions
    torch.testing.assert_close(ours(ids).logits, llama(ids).logits, atol=1e-5, rtol=0)
    assert type(load_causal_lm(tmp_path / "llama3")).__name__ == "LlamaForCausalLM"  # the default: as it is
    qwen, _ = family_model("qwen2", texts())
    qwen.save_pretrained(tmp_path / "qwen2")
    with pytest.raises(UnsupportedModelError, match=r"'qwen2' model, already loadable by transformers"):
        load_causal_lm(tmp_path / "qwen2", "model", as_align_llama=True)


def test_checkpoints_a_stage_cannot_use_get_one_line(tmp_path):
    from transformers import T5Config, T5Model

    T5Model(T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(
        tmp_path / "t5"
    )
    with pytest.raises(UnsupportedModelError, match=r"model: .*t5 is a 't5' model, which transformers has no "
                       r"causal-LM class for; expected a decoder-only"):  # fmt: skip
        load_causal_lm(tmp_path / "t5", "model")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "my_secret_lm", "auto_map": {
        "AutoConfig": "configuration_secret.SecretConfig", "AutoModelForCausalLM": "modeling_secret.SecretLM"}}))  # fmt: skip
    (remote / "configuration_secret.py").write_text("raise SystemExit('this code must not run')\n")
    save_file({"weight": torch.zeros(2)}, remote / "model.safetensors")
    with pytest.raises(UnsupportedModelError, match=r"needs the code in its folder .*--trust_remote_code true"):
        load_sequence_classifier(remote, "reward model")
    # From the command line: one line, exit status 2, the folder's code never run.
    result = subprocess.run([sys.executable, "-m", "align", "sft", "--model", str(remote), "--dataset", "world"],
                            cwd=ROOT, capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert re.search(r"align sft: error: model: .*remote needs the code in its folder", result.stderr)


MARKER_CODE = """import os
from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

Path(os.environ["MARKER"]).write_text("the folder's code ran")


class MarkerConfig(LlamaConfig):
    model_type = "marker_llama"


class MarkerForCausalLM(LlamaForCausalLM):
    config_class = MarkerConfig
"""


def test_a_folders_own_code_runs_only_with_trust_remote_code_and_nothing_prompts(tmp_path):
    """A user's Llama saved as an architecture of its own (`auto_map` to code in the folder that writes a marker
    file when imported): refused with one line, the code not run and no question asked, with stdin closed and
    with a terminal; with `--trust_remote_code true` the code runs and SFT trains it."""
    import os
    import pty

    from user_project import write_user_project

    data = write_user_project(tmp_path / "project")
    folder = Path(data["model"])
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="marker_llama", architectures=["MarkerForCausalLM"],
                  auto_map={"AutoConfig": "marker.MarkerConfig", "AutoModelForCausalLM": "marker.MarkerForCausalLM"})  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "marker.py").write_text(MARKER_CODE)
    marker = tmp_path / "marker.txt"
    env = {"HF_HUB_OFFLINE": "1", "PATH": os.environ.get("PATH", ""), "MARKER": str(marker),
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "HOME": str(tmp_path)}  # fmt: skip
    command = [sys.executable, "-m", "align", "sft", "--model", str(folder), "--dataset", data["sft"], "--max_steps",
               "1", "--per_device_batch_size", "2", "--max_length", "128", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    main_end, terminal = pty.openpty()
    for stdin in (subprocess.DEVNULL, terminal):
        result = subprocess.run(command, cwd=ROOT, env=env, stdin=stdin, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
        assert "needs the code in its folder (auto_map)" in result.stderr and "--trust_remote_code true" in result.stderr
        assert "[y/N]" not in result.stdout + result.stderr and not marker.exists()
        assert not (tmp_path / "out").exists()
    os.close(main_end), os.close(terminal)
    result = subprocess.run([*command, "--trust_remote_code", "true"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.read_text() == "the folder's code ran"
    trained = json.loads((tmp_path / "out" / "final" / "config.json").read_text())
    assert trained["model_type"] == "marker_llama"  # the user's architecture, trained and saved as it came
