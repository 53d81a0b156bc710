"""`align dpo` on a user's own model and pair files (TRL's format and HH-RLHF's), resumed after a kill to the same
weights, with LoRA, and its bad inputs as one-line errors."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trl
from safetensors.torch import load_file
from transformers import TrainerCallback

from align.checkpoint import last_complete_checkpoint
from align.data import load_preferences
from align.dpo import LOSS_TYPES, DPOConfig, dpo
from align.io import atomic_write_jsonl, read_jsonl
from align.modeling import load_causal_lm as load

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(max_length=256, per_device_batch_size=4, gradient_accumulation_steps=1, logging_steps=1, lr=5e-4)


class KillAfterCheckpoint(TrainerCallback):
    """Stops the run right after its first checkpoint is written, as a kill at that moment would."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def trl_pairs(hh_file: str, path: Path) -> str:
    """The user's HH-RLHF pairs rewritten in TRL's conversational format (prompt / chosen / rejected)."""
    pairs = load_preferences(hh_file, format="hh-rlhf")
    atomic_write_jsonl(path, [{k: pair[k] for k in ("prompt", "chosen", "rejected")} for pair in pairs])
    return str(path)


def losses(run_dir: Path) -> list[float]:
    return [record["loss"] for record in read_jsonl(run_dir / "metrics.jsonl") if "loss" in record]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_dpo_on_a_users_model_and_pairs_in_trl_and_hh_rlhf_format(tmp_path, user_models):
    """DPO from the user's chat model (a plain Llama, ChatML template) on their pairs: the first step's loss is
    log 2 (policy = reference), the loss falls and the policy prefers the chosen answers more than it did."""
    data, models = user_models
    sources = {"trl": trl_pairs(data["helpfulness"], tmp_path / "pairs.jsonl"), "hh-rlhf": data["helpfulness"]}
    for data_format, source in sources.items():
        out = tmp_path / data_format
        final = dpo(DPOConfig(model=models["sft"], dataset=source, data_format=data_format, output_dir=str(out),
                              num_train_epochs=3, save_steps=1000, **SMALL))  # fmt: skip
        done = json.loads((out / "DONE.json").read_text())
        assert done["pairs"] == len(load_preferences(data["helpfulness"], format="hh-rlhf"))
        assert done["reference"] == models["sft"] and done["data_sources"]["dataset"][0].startswith(source)
        trained = losses(out)
        assert trained[0] == pytest.approx(0.6931, abs=1e-3), data_format
        assert sum(trained[-3:]) / 3 < 0.5, trained
        accuracies = [r["rewards/accuracies"] for r in read_jsonl(out / "metrics.jsonl") if "rewards/accuracies" in r]
        assert sum(accuracies[-3:]) / 3 > 0.8, accuracies
        assert (final / "config.json").is_file() and (out / "README.md").is_file()
        assert json.loads((final / "config.json").read_text())["model_type"] == "llama"  # the user's own class


def test_dpo_resumed_after_a_kill_ends_with_the_same_weights(tmp_path, user_models):
    data, models = user_models

    def config(name: str) -> DPOConfig:
        return DPOConfig(model=models["sft"], dataset=data["helpfulness"], output_dir=str(tmp_path / name),
                         max_steps=6, save_steps=3, seed=3, **SMALL)  # fmt: skip

    straight = dpo(config("straight"))
    with pytest.raises(KeyboardInterrupt):
        dpo(config("killed"), callbacks=[KillAfterCheckpoint()])
    assert last_complete_checkpoint(tmp_path / "killed").name == "checkpoint-3"
    assert not (tmp_path / "killed" / "final").exists()
    resumed = dpo(config("killed"))
    assert json.loads((tmp_path / "killed" / "DONE.json").read_text())["resumed_from"].endswith("checkpoint-3")
    first, second = weights(straight), weights(resumed)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=1e-5, rtol=1e-4)
    assert not torch.equal(first["model.embed_tokens.weight"], weights(Path(models["sft"]))["model.embed_tokens.weight"])


def test_dpo_with_lora_keeps_the_adapter_and_merges_it(tmp_path, user_models, monkeypatch):
    """With LoRA the reference is the base under the adapters (no second model); final/ is merged, adapter/ kept."""
    data, models = user_models
    out = tmp_path / "lora"
    loaded = []
    monkeypatch.setattr("align.dpo.load_causal_lm", lambda *args, **kwargs: loaded.append(args) or load(*args, **kwargs))
    # The policy named as its own reference, as the rounds do: still the adapters off, no second model loaded.
    final = dpo(DPOConfig(model=models["sft"], reference=models["sft"], dataset=data["helpfulness"],
                          output_dir=str(out), max_steps=4, save_steps=1000, lora={"r": 4, "alpha": 8}, **SMALL))  # fmt: skip
    assert [what for _, what in loaded] == ["model"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert losses(out)[0] == pytest.approx(0.6931, abs=1e-3)
    base, merged = weights(Path(models["sft"])), weights(final)
    assert base.keys() == merged.keys()  # a full model, no adapter weights left in it
    assert any(not torch.equal(base[name], merged[name]) for name in base)


def test_every_loss_trl_offers_is_accepted_and_others_are_refused():
    documented = re.findall(r"`'(\w+)'`", trl.DPOConfig.__dataclass_fields__["loss_type"].metadata["help"])
    assert documented and set(documented) == set(LOSS_TYPES)
    config = DPOConfig(model="m", dataset="d.jsonl", loss_type="sigmoid,sft", loss_weights="1,0.2")
    assert config.loss_types == ["sigmoid", "sft"] and config.weights == [1.0, 0.2]


def test_bad_dpo_inputs_are_one_line_errors(tmp_path, user_models, capsys):
    """One line naming the input, exit status 2: the first as a process (what a user sees), the others through the
    same `main` in this process (a process each cost 10 s)."""
    from align.cli.dpo import main

    data, models = user_models
    unsure = tmp_path / "unsure.jsonl"
    atomic_write_jsonl(unsure, [{"prompt": [{"role": "user", "content": "hi"}],
                                 "chosen": [{"role": "assistant", "content": "hello"}],
                                 "rejected": [{"role": "assistant", "content": "go"}]}])  # fmt: skip
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "hi", "chosen": "a"}\n')
    base = ["--model", models["sft"], "--output_dir", str(tmp_path / "out")]
    for extra, message in (
        (["--dataset", str(tmp_path / "missing.jsonl")], r"dataset: no file at .*missing\.jsonl"),
        (["--dataset", str(broken)], r"broken\.jsonl: record 0 \(line 1\)"),
        (["--dataset", data["helpfulness"], "--loss_type", "sigmoid,nope"], "loss_type: expected one or more of"),
        (["--dataset", data["helpfulness"], "--loss_type", "sigmoid,sft", "--loss_weights", "1"],
         "loss_weights: expected 2 numbers"),
        (["--dataset", data["helpfulness"], "--loss_type", "sigmoid,sft", "--loss_weights", "1,nan"],
         "loss_weights: expected comma-separated finite numbers"),
        (["--dataset", str(unsure), "--min_strength", "better"], "none of its 1 pairs is at least min_strength=better"),
        (["--dataset", data["helpfulness"], "--max_length", "4", "--on_long", "raise"], "longer than max_length=4"),
        (["--dataset", data["helpfulness"], "--min_strength", "strong"], "min_strength: expected one of"),
    ):
        if "missing.jsonl" in extra[1]:
            done = subprocess.run([sys.executable, "-m", "align", "dpo", *base, *extra], cwd=ROOT, text=True,
                                  capture_output=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
            returncode, stderr = done.returncode, done.stderr
        else:
            with pytest.raises(SystemExit) as exited:
                main([*base, *extra], prog="align dpo")
            returncode, stderr = exited.value.code, capsys.readouterr().err
        assert returncode == 2, (extra, stderr[-2000:])
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr[-2000:]
        assert re.search(message, stderr), (message, stderr)
    assert not (tmp_path / "out" / "final").exists()
