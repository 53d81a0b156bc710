"""The world only when asked: every stage given a user's model and missing one input stops before any work with
one line naming it; the demo with no data options is the world's; sources are recorded with content hashes."""

import subprocess
import sys
from pathlib import Path

import pytest

from align.config import ConfigError, build_config
from align.ppo import PPOConfig
from align.pretrain import PretrainConfig
from align.rejection_sampling import RejectionSamplingConfig
from align.reward_model import RewardModelConfig
from align.rounds import Rounds, RoundsConfig
from align.sft import SFTConfig
from align.sources import announce_sources, describe_source, file_hash

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ["--policy", "my/policy", "--helpfulness_rm", "my/rm_h", "--safety_rm", "my/rm_s"]
ROUNDS_INPUTS = {
    "--sft_model": "my/chat", "--prompts": "p.jsonl", "--eval_prompts": "e.jsonl",
    "--helpfulness_eval_pairs": "h_test.jsonl", "--safety_eval_pairs": "s_test.jsonl",
    "--helpfulness_data": "hh.jsonl", "--safety_data": "pku.jsonl",
}  # fmt: skip


@pytest.mark.parametrize(
    "config_class, argv, message",
    [
        (PretrainConfig, ["--tokenizer", "my/tokenizer"], "dataset: required, the documents to pretrain on"),
        (SFTConfig, ["--model", "my/llama"], "dataset: required, dialogue files"),
        (RewardModelConfig, ["--model", "my/chat"], "helpfulness_data: required, helpfulness preference pairs"),
        (RewardModelConfig, ["--model", "my/chat", "--helpfulness_data", "hh.jsonl"],
         "safety_data: required, safety pairs for the helpfulness RM's mix"),
        (RewardModelConfig, ["--model", "my/chat", "--target", "safety", "--safety_data", "pku.jsonl",
                             "--helpfulness_data", "hh.jsonl"], "eval_data: required with your own data"),
        (RejectionSamplingConfig, CHECKPOINTS, "prompts: required, a JSONL file of {id, prompt, is_safety} prompts"),
        (PPOConfig, CHECKPOINTS, "prompts: required"),
        *[(RoundsConfig, [a for k, v in ROUNDS_INPUTS.items() if k != missing for a in (k, v)],
           f"{missing[2:]}: required when the rounds run on your own") for missing in ROUNDS_INPUTS],
    ],
)  # fmt: skip
def test_a_stage_missing_one_input_names_it(config_class, argv, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        build_config(config_class, argv)


def test_any_input_may_ask_for_the_world_explicitly():
    assert build_config(SFTConfig, ["--model", "m", "--dataset", "world"]).dataset == "world"
    config = build_config(RewardModelConfig, ["--model", "m", "--helpfulness_data", "hh.jsonl,world",
                                              "--safety_data", "world", "--eval_data", "none"])  # fmt: skip
    assert config.eval_data == "none"
    world = build_config(RewardModelConfig, ["--model", "m", "--helpfulness_data", "world", "--safety_data", "world"])
    assert world.eval_data == "world"  # the world's own test pairs, for the world's data
    rounds = build_config(RoundsConfig, ["--sft_model", "my/chat"] + [
        a for k in ROUNDS_INPUTS if k != "--sft_model" for a in (k, "world")])  # fmt: skip
    assert rounds.on_user_data  # the user's chat model, every other input the demo's, asked for


def test_the_demo_with_no_data_options_is_the_worlds(tmp_path):
    config = build_config(RoundsConfig, ["--runs_dir", str(tmp_path)])
    assert not config.on_user_data and config.input_sources() == {"all": ["world(seed=0)"]}
    Rounds(config)  # every shipped world_small stage config builds with the rounds' chaining


def test_sources_are_described_by_path_and_content_hash(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    assert describe_source(str(data)) == f"{data} (sha256 {file_hash(data)})" and len(file_hash(data)) == 16
    assert describe_source("world", world_seed=3) == "world(seed=3)"
    assert describe_source("Anthropic/hh-rlhf") == "datasets:Anthropic/hh-rlhf"
    recorded = announce_sources("reward_model", {"helpfulness_data": f"{data},world", "safety_data": None})
    assert recorded == {"helpfulness_data": [describe_source(str(data)), "world(seed=0)"]}
    assert f"[reward_model] helpfulness_data: {data} (sha256" in capsys.readouterr().out


def test_recipes_stop_before_any_work_with_one_line_also_under_the_launcher(tmp_path):
    """Plain `python` and `python -m align.launch` (accelerate launch keeping the recipe's exit status)."""
    for command in (
        [sys.executable, "recipes/sft.py", "--model", "my/llama"],
        [sys.executable, "-m", "align.launch", "--num_processes", "1", "--mixed_precision", "no", "--dynamo_backend",
         "no", "--num_machines", "1", "recipes/rejection_sampling.py", *CHECKPOINTS],
        [sys.executable, "recipes/rlhf_round.py", "--round", "1", "--sft_model", "my/chat", "--runs_dir",
         str(tmp_path)],
    ):  # fmt: skip
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and "required" in errors[0] and "Traceback" not in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())  # nothing was written
