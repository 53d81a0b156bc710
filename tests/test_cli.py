"""The `align` console script (align/cli): every command's --help, one real run of each on a user's own tiny model
and files (tests/user_project.py), `python -m align` and `accelerate launch -m align`, one-line errors."""

import dataclasses
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from align.cli import COMMANDS, main
from align.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).with_name("align")  # what `pip install` put next to this interpreter
ALIGN = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.is_file() else [sys.executable, "-m", "align"]
CONFIG_CLASSES = {"pretrain": "PretrainConfig", "sft": "RecipeConfig", "reward-model": "RewardModelConfig",
                  "reward-model-ablation": "RewardModelConfig", "rejection-sampling": "RecipeConfig",
                  "ppo": "RecipeConfig", "dpo": "DPOConfig", "compare": "CompareConfig", "round": "RecipeConfig", "plan": "PlanConfig", "export": "ExportConfig",
                  "annotate": "AnnotationPageConfig", "report": "ReportConfig", "evaluate": "EvaluateConfig"}  # fmt: skip


def align(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*ALIGN, *map(str, args)], cwd=ROOT, capture_output=True, text=True, **kwargs)


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_status:
        main(list(argv))
    assert exit_status.value.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help_with_its_docstring_every_option_and_an_example(command, capsys):
    if command == "bench":
        main(["bench", "--help"])
        text = capsys.readouterr().out
        assert "align bench decode" in text and "ppo_memory" in text  # an example and the list of benchmarks
        return
    text = help_text(capsys, command, "--help")
    module = importlib.import_module(COMMANDS[command][0])
    assert text.startswith(f"usage: align {command} ")
    assert module.__doc__.splitlines()[0][:60] in " ".join(text.split())  # the docstring, as written
    assert re.search(rf"^\s+align {command}\b", text, re.M), "an example command line"
    config_class = getattr(module, CONFIG_CLASSES[command])
    for option in dataclasses.fields(config_class):
        assert f"--{option.name}" in text, option.name
    assert "PIPELINE" not in text  # a file outside the repository; the method's facts are in docs/method.md
    flat = " ".join(text.split())
    assert not re.search(r"\(default:? [^)]*\) \(default:", flat), "a default printed twice"
    assert "(default: )" not in flat and "(default: None)" not in flat


def test_switch_help_says_what_the_switch_does(capsys):
    text = " ".join(help_text(capsys, "sft", "--help").split())
    assert "--no_resume, --no-resume turn --resume off (it is on by default)" in text
    assert "--no_merge_lora, --no-merge-lora turn --merge_lora off" in text
    rounds = " ".join(help_text(capsys, "round", "--help").split())
    assert "--pairs-format PAIRS_FORMAT format of the annotated pair files, one of ['auto', 'trl'," in rounds


def exit_of(capsys, *argv: str) -> tuple[int, str, str]:
    """`align <argv>` in this process: its exit status, stdout and stderr."""
    with pytest.raises(SystemExit) as exit_status:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_status.value.code or 0, captured.out, captured.err


def test_align_help_lists_every_command_and_mistakes_are_one_line(capsys):
    """The dispatcher's answers in this process; one mistake as a process, as a user's shell sees it."""
    text = help_text(capsys, "--help")
    for command in COMMANDS:
        assert f"  {command} " in text
    status, _, stderr = exit_of(capsys, "sfx")
    assert status == 2 and stderr.startswith("align: error: unknown command 'sfx' (did you mean 'sft'?)")
    done = align("sft", "--lr", "fast")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("align sft: error:") and "--lr" in done.stderr
    status, stdout, _ = exit_of(capsys, "round", "--help")
    assert status == 0 and stdout.startswith("usage: align round ")
    for word in ("three", "-1"):  # a round number, not an unknown option
        status, _, stderr = exit_of(capsys, "round", word)
        assert status == 2 and stderr == (f"align round: error: round: expected the round number, a "
                                          f"whole number from 1 (align round 3), got {word!r}\n")  # fmt: skip


def test_the_recipes_are_the_same_commands():
    """`python recipes/X.py` runs the command's own entry point: the same parser and help."""
    recipe = subprocess.run([sys.executable, "recipes/sft.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    command = align("sft", "--help")
    assert recipe.returncode == command.returncode == 0
    assert recipe.stdout.startswith("usage: sft.py ") and command.stdout.startswith("usage: align sft ")
    assert recipe.stdout.split("\n\n", 1)[1] == command.stdout.split("\n\n", 1)[1]  # all but the usage lines


def test_a_user_project_through_the_align_command(tmp_path, user_models):
    """A user's own plain Llama, tokenizer and files, every stage and tool run once through `align` (tiny
    settings): each exits 0 and writes what it says."""
    from user_project import texts, write_stage_yamls

    data, models = user_models
    common = ["--max_length", "256", "--per_device_batch_size", "4", "--save_steps", "1000"]

    (tmp_path / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts()))
    done = align("pretrain", "--init_from", data["model"], "--tokenizer", data["model"], "--dataset",
                 tmp_path / "text.jsonl", "--seq_length", "64", "--per_device_batch_size", "2", "--max_steps", "2",
                 "--warmup_steps", "1", "--save_steps", "1000", "--output_dir", tmp_path / "pretrain")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "pretrain" / "final" / "model.safetensors").is_file()

    done = align("sft", "--model", data["model"], "--dataset", data["sft"], "--max_steps", "2", *common,
                 "--output_dir", tmp_path / "sft")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fine-tuned model:" in done.stdout
    card = (tmp_path / "sft" / "README.md").read_text()
    assert f"trained with align, the Llama 2 alignment pipeline on the Hugging Face stack (stage `sft`), from " \
           f"`{data['model']}`" in card and "None" not in card  # fmt: skip

    done = align("reward-model", "--model", models["sft"], "--target", "safety", "--helpfulness_data",
                 data["helpfulness"], "--safety_data", data["safety"], "--eval_data", data["safety_eval"],
                 "--max_steps", "2", *common, "--output_dir", tmp_path / "rm")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "rm" / "eval" / "metrics.json").read_text())["accuracy"] >= 0

    done = align("reward-model-ablation", "--model", models["sft"], "--target", "safety", "--helpfulness_data",
                 data["helpfulness"], "--safety_data", data["safety"], "--eval_data", data["safety_eval"],
                 "--max_steps", "1", *common, "--output_dir", tmp_path / "ablation")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name for p in (tmp_path / "ablation").glob("margin-*")} == {"margin-none", "margin-small", "margin-large"}
    assert "safety, margin large" in done.stdout  # the table of the three

    rl = ["--policy", models["sft"], "--helpfulness_rm", models["helpfulness"], "--safety_rm", models["safety"],
          "--prompts", data["prompts"]]  # fmt: skip
    done = align("rejection-sampling", *rl, "--num_samples", "2", "--max_new_tokens", "8", "--finetune", "false",
                 "--output_dir", tmp_path / "rs")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_jsonl(tmp_path / "rs" / "kept.jsonl")

    done = align("ppo", *rl, "--num_iterations", "1", "--batch_size", "4", "--mini_batch_size", "2",
                 "--response_length", "6", "--output_dir", tmp_path / "ppo")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_jsonl(tmp_path / "ppo" / "metrics.jsonl")

    done = align("export", "--model", tmp_path / "ppo" / "final", "--output_dir", tmp_path / "llama")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "llama" / "config.json").read_text())["model_type"] == "llama"

    done = align("plan", "--preset", "7b", "--stage", "ppo", "--gpus", "8", "--strategy", "fsdp", "--shard_frozen",
                 "true", "--forward_batch_size", "16")  # fmt: skip
    assert done.returncode == 0 and "total per GPU" in done.stdout
    done = align("plan", "--preset", "70b", "--stage", "ppo", "--gpus", "64", "--strategy", "zero3")
    assert done.returncode == 2 and done.stderr.strip().endswith("it fits with --strategy fsdp --shard_frozen true")

    stages = write_stage_yamls(tmp_path / "configs")
    rounds = ["--runs_dir", tmp_path / "runs", "--sft_model", models["sft"], "--helpfulness_rm", models["helpfulness"],
              "--safety_rm", models["safety"], "--prompts", data["prompts"], "--eval_prompts", data["eval_prompts"],
              "--helpfulness_eval_pairs", data["helpfulness_eval"], "--safety_eval_pairs", data["safety_eval"],
              "--judge_helpfulness_rm", models["helpfulness"], "--judge_safety_rm", models["safety"],
              "--rm_update_config", stages["rm"], "--rejection_sampling_config", stages["rs"],
              "--pairs_per_round", "12", "--annotation_max_new_tokens", "16"]  # fmt: skip
    # Without labels a round on real data writes its batch and stops (3); the page's export then says what is done.
    done = align("round", "1", "--name", "people", *rounds)
    assert done.returncode == 3 and "round 1 needs labels" in done.stderr
    done = align("annotate", "--round", "1", "--name", "people", "--runs_dir", tmp_path / "runs", "--export_only")
    assert done.returncode == 0 and "0 labelled pairs" in done.stdout, done.stderr[-2000:]

    # `accelerate launch -m align round N`, the batch labelled by a reward model (AI feedback).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "align"]  # fmt: skip
    done = subprocess.run([*launch, "round", "1", "--name", "ai", *map(str, rounds), "--annotator",
                           f"rm:{models['helpfulness']}"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ai"
    assert (run_dir / "report.html").is_file() and "## Columns" in (run_dir / "report.md").read_text()
    rerun = subprocess.run([*launch, "round", "1", "--name", "ai", *map(str, rounds), "--annotator",
                            f"rm:{models['helpfulness']}"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert rerun.returncode == 0 and "[round 1] rejection_sampling: done in an earlier run, skipped" in rerun.stdout

    (run_dir / "report.html").unlink()
    done = align("report", run_dir)
    assert done.returncode == 0 and (run_dir / "report.html").is_file()

    done = align("bench", "gpu", "--device", "cpu", "--preset", "tiny", "--num_hidden_layers", "1", "--stages", "sft",
                 "--steps", "1", "--seq_length", "32", "--batch_size", "2", "--out", tmp_path / "gpu.json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "gpu.json").read_text())["stages"]["sft"]["tokens_per_s"] > 0
