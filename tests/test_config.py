"""Recipe configs: YAML plus command-line overrides; every mistake is one clear line naming the key."""

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from align.config import (
    ConfigError,
    build_config,
    first_process_to_say,
    load_yaml_config,
    use_every_core_of_a_lone_cpu_process,
)
from align.pretrain import PretrainConfig
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_then_command_line_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_preset: tiny\ndataset: world\nlr: 0.001\nmax_steps: 7\n")
    config = build_config(PretrainConfig, ["--config", str(path), "--lr", "1e-4", "--gradient_checkpointing", "true"])
    assert (config.model_preset, config.lr, config.max_steps, config.gradient_checkpointing) == ("tiny", 1e-4, 7, True)
    assert build_config(PretrainConfig, [f"--config={path}"]).max_steps == 7


@pytest.mark.parametrize(
    "yaml_text, argv, message",
    [
        ("lrr: 0.1\n", [], r"c.yaml: unknown key 'lrr' \(did you mean 'lr'\?\)"),
        ("", ["--max_step", "3"], r"unknown option --max_step \(did you mean '--max_steps'\?\)"),
        ("", ["--max_steps", "many"], r"max_steps.*invalid int value: 'many'"),
        ("max_steps: 0\n", [], r"max_steps: must be positive"),
        ("model_preset: 8b\n", [], r"model_preset: unknown preset '8b'"),
        ("- a\n- b\n", [], r"expected a mapping of config keys"),
        ("lr: [\n", [], r"not valid YAML"),
    ],
)
def test_config_mistakes_name_the_key(tmp_path, yaml_text, argv, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        build_config(PretrainConfig, ["--config", str(path), *argv])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="--config: no file at"):
        build_config(PretrainConfig, ["--config", str(tmp_path / "nope.yaml")])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lrr", "1"], "pretrain.py: error: unknown option --lrr (did you mean '--lr'?)"),
        (["--config", "missing.yaml"], "pretrain.py: error: --config: no file at missing.yaml (nor a config align ships by that name: "
                                         "70b, 7b, world_small, world_tiny)"),
        (
            ["--model_preset", "tiny", "--dataset", "world", "--tokenizer", "no/such/dir"],
            "pretrain.py: error: tokenizer: no directory at no/such/dir",
        ),
    ],
)
def test_recipe_prints_one_line_and_exits_non_zero(argv, message):
    done = subprocess.run(
        [sys.executable, "recipes/pretrain.py", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [message]


def recipe_config(script: str):
    return runpy.run_path(str(ROOT / "recipes" / script))["RecipeConfig"]


# Fields the rounds (or the command line) set on top of a stage file; dummies make the file's own values checkable.
CHAINED = {
    "reward_model_update.yaml": {"model": "-", "helpfulness_data": "world", "safety_data": "world"},
    "ppo.yaml": {"policy": "-", "helpfulness_rm": "-", "safety_rm": "-", "prompts": "world"},
    "rejection_sampling.yaml": {"policy": "-", "helpfulness_rm": "-", "safety_rm": "-", "prompts": "world"},
}
CHAINED["world_tiny_reward_model.yaml"] = CHAINED["reward_model_update.yaml"]
CHAINED["world_tiny_ppo.yaml"] = CHAINED["ppo.yaml"]
CHAINED["world_tiny_rejection_sampling.yaml"] = CHAINED["rejection_sampling.yaml"]
CHAINED["world_tiny_sft.yaml"] = {"model": "-", "dataset": "world"}
CHAINED["dpo.yaml"] = CHAINED["world_tiny_dpo.yaml"] = {"model": "-", "dataset": "world"}


REWARD_SPECS = {"ppo_reward_every_answer.yaml": "ppo_reward"}


@pytest.mark.parametrize("path", sorted((ROOT / "recipes" / "configs").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")  # fmt: skip
def test_every_shipped_config_file_builds_its_config(path):
    """A typo in a shipped YAML (a key, a type, a bad value) fails here rather than in a user's run."""
    from align.dpo import DPOConfig
    from align.ppo import PPOConfig
    from align.pretrain import PretrainConfig
    from align.rejection_sampling import RejectionSamplingConfig
    from align.reward_model import RewardModelConfig
    from align.sft import SFTConfig

    stage = path.parent.name
    if path.name in REWARD_SPECS:  # a reward spec for the rounds (align round --reward / --ppo_reward FILE)
        from align.rounds import parse_rounds_reward

        assert parse_rounds_reward(str(path), REWARD_SPECS[path.name])["sources"]
        return
    config_class = {
        "pretrain": PretrainConfig,
        "sft": SFTConfig,
        "reward_model": RewardModelConfig,
        "rejection_sampling": recipe_config("rejection_sampling.py"),
        "ppo": PPOConfig,
        "dpo": DPOConfig,
    }.get(stage)
    if stage == "rlhf_round":
        config_class = {
            "reward_model_update.yaml": RewardModelConfig,
            "rejection_sampling.yaml": RejectionSamplingConfig,
            "ppo.yaml": PPOConfig,
            "dpo.yaml": DPOConfig,
            "world_small.yaml": recipe_config("rlhf_round.py"),
            "7b.yaml": recipe_config("rlhf_round.py"),
            "world_tiny.yaml": recipe_config("rlhf_round.py"),
            "world_tiny_pretrain.yaml": PretrainConfig,
            "world_tiny_sft.yaml": SFTConfig,
            "world_tiny_reward_model.yaml": RewardModelConfig,
            "world_tiny_rejection_sampling.yaml": RejectionSamplingConfig,
            "world_tiny_ppo.yaml": PPOConfig,
            "world_tiny_dpo.yaml": DPOConfig,
        }[path.name]
    values = {**load_yaml_config(path, config_class), **CHAINED.get(path.name, {})}
    config_class(**values)


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "recipes" / "accelerate").glob("*.yaml")), ids=str
)
def test_shipped_accelerate_configs_load_and_name_our_layer(path):
    from accelerate.commands.config.config_args import load_config_from_file

    import align.modeling.modeling_align_llama

    config = load_config_from_file(str(path))
    assert config.num_processes % config.num_machines == 0
    wrapped = (config.fsdp_config or {}).get("fsdp_transformer_layer_cls_to_wrap")
    if wrapped is not None:  # FSDP's unit must be our decoder layer class, by name
        assert hasattr(align.modeling.modeling_align_llama, wrapped)
    if config.distributed_type == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] in (2, 3)


@pytest.mark.parametrize(
    ("environment", "expected_threads"),
    [
        ({"ACCELERATE_DYNAMO_BACKEND": "NO", "OMP_NUM_THREADS": "1"}, "every core"),  # `accelerate launch x.py`
        ({"ACCELERATE_DYNAMO_BACKEND": "NO", "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2"}, 1),  # several processes
        ({"OMP_NUM_THREADS": "1"}, 1),  # the user's own setting, without accelerate
    ],
)
def test_a_lone_cpu_process_launched_by_accelerate_uses_every_core(monkeypatch, environment, expected_threads):
    for name in ("ACCELERATE_DYNAMO_BACKEND", "OMP_NUM_THREADS", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        use_every_core_of_a_lone_cpu_process()
        cores = len(os.sched_getaffinity(0))
        assert torch.get_num_threads() == (cores if expected_threads == "every core" else expected_threads)
    finally:
        torch.set_num_threads(before)


def test_a_precision_the_device_cannot_do_falls_back_to_fp32_with_a_log_line(caplog):
    import logging

    from align.config import device_precision, precision_flags

    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    with caplog.at_level(logging.WARNING):
        assert device_precision("bf16") == "no" and precision_flags("fp16") == {"bf16": False, "fp16": False}
    assert "mixed_precision=bf16: not supported on this device (CPU); training in fp32" in caplog.text
    assert "mixed_precision=fp16" in caplog.text
    assert device_precision("auto") == "no" and device_precision("no") == "no"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num_train_epochs", "-1"], "num_train_epochs: must be positive, got -1.0"),
        (["--weight_decay", "-0.1"], "weight_decay: must be >= 0"),
        (["--adam_beta2", "1.5"], r"adam_beta2: must be in \(0, 1\]"),
    ],
)
def test_values_out_of_range_are_refused_before_any_work(argv, message):
    from align.sft import SFTConfig

    with pytest.raises(ConfigError, match=message):
        build_config(SFTConfig, ["--model", "m", "--dataset", "world", *argv])


def test_every_field_is_converted_to_its_type_or_refused_by_name():
    """One shared check on every stage config: YAML strings like '1e-4' become floats, 4.0 an int, 'true' a bool;
    a list for a float, 2.5 for an int or 'maybe' for a bool is refused naming the field."""
    from align.config import coerce_field_value
    from align.ppo import PPOConfig
    from align.sft import SFTConfig

    assert coerce_field_value(SFTConfig, "lr", "1e-4", "lr") == 1e-4
    assert coerce_field_value(SFTConfig, "per_device_batch_size", 4.0, "x") == 4
    assert coerce_field_value(SFTConfig, "packing", "true", "x") is True
    assert coerce_field_value(SFTConfig, "lora", {"r": 8}, "x") == {"r": 8}
    assert coerce_field_value(SFTConfig, "tokenizer", None, "x") is None
    for name, value, message in (("lr", [1, 2], "lr: expected float, got [1, 2]"),
                                 ("per_device_batch_size", 2.5, "per_device_batch_size: expected int, got 2.5"),
                                 ("packing", "maybe", "packing: expected bool, got 'maybe'"),
                                 ("model", None, "model: expected str, got None"),
                                 ("lora", [3], "lora: expected dict or str or null, got [3]")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            SFTConfig(**{"model": "m", "dataset": "world", name: value})
    config = PPOConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", kl_coef="0.05", batch_size=8.0,
                       mini_batch_size=4)  # fmt: skip
    assert config.kl_coef == 0.05 and isinstance(config.batch_size, int)


def test_several_processes_print_a_mistake_once_and_different_mistakes_each(monkeypatch):
    """The processes of a torchrun launch meet in the store their launcher hosts (played here by a store this
    test hosts): the first to report a line prints it, the others stay quiet unless their line is another."""
    import torch.distributed as dist

    port = free_port()
    launcher_store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)  # noqa: F841
    assert first_process_to_say("sft.py: error: a") is True  # one process: always
    for name, value in {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                        "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RUN_ID": "t"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert [first_process_to_say(line) for line in ("x: error: a", "x: error: a", "x: error: b")] == [True, False, True]
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "another launch")
    assert first_process_to_say("x: error: a") is True
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # a launcher without a store of its own
    assert first_process_to_say("x: error: a") is True


def test_a_mistake_is_one_line_with_status_2_under_a_launch_of_two_processes():
    command = [sys.executable, "-m", "align.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "recipes/sft.py", "--config", "world_small", "--learning_rate", "1e-4"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == ["sft.py: error: unknown option --learning_rate (did you mean '--lr'?)"]
