"""A run owns its folder: one run at a time, finished runs are not trained again, `resume: false` never picks up
the old run, config mismatches are refused (rejection-sampling shards too), rotation by step number, stale
staging folders removed, honest records across resumes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from align.checkpoint import (
    LOCK_FILE,
    RunFolderError,
    acquire_run_lock,
    last_complete_checkpoint,
    release_run_lock,
    rotate_checkpoints,
)
from align.pretrain import PretrainConfig, pretrain
from align.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def tiny_pretrain(output_dir: Path, **overrides) -> PretrainConfig:
    values = dict(
        output_dir=str(output_dir), dataset="world", model_preset="tiny", tokenizer="data/tokenizer", seq_length=64,
        per_device_batch_size=4, max_steps=12, warmup_steps=2, lr=2e-3, logging_steps=1, save_steps=4,
        world_documents=300, seed=0,
    )  # fmt: skip
    return PretrainConfig(**{**values, **overrides})


def interrupted_at(step: int):
    """A Trainer callback that stops the run as Ctrl-C would, at the end of `step`."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt

    return Interrupt()


def test_a_second_run_on_a_folder_in_use_stops_at_once_and_a_stale_lock_is_taken_over(tmp_path, caplog):
    """Another live process holds the folder: a second run stops within seconds with one line naming it. A lock
    whose process is gone is taken over with a log line."""
    import logging

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from align.checkpoint import acquire_run_lock; "
         f"acquire_run_lock({str(out)!r}); print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.time()
        result = subprocess.run(
            [sys.executable, "recipes/pretrain.py", "--config", "recipes/configs/pretrain/world_tiny.yaml",
             "--output_dir", str(out)],
            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        assert result.returncode == 2 and time.time() - started < 60
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .startswith(f"pretrain.py: error: output_dir {out}: in use by another run (pid {holder.pid} on ")
        ), result.stderr
        assert not (out / "checkpoint-100").exists() and not (out / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    lock = json.loads((out / LOCK_FILE).read_text())
    assert lock["pid"] == holder.pid  # killed with the lock held: a stale lock
    with caplog.at_level(logging.WARNING):
        acquire_run_lock(out)
    assert "taking over the lock of a run that is gone" in caplog.text
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    release_run_lock(out)
    assert not (out / LOCK_FILE).exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="output_dir .*file: is a file, expected a folder"):
        acquire_run_lock(tmp_path / "file")


def test_a_finished_run_is_not_trained_again_and_extend_continues_it(tmp_path, capsys):
    out = tmp_path / "run"
    final = pretrain(tiny_pretrain(out))
    done = out / "DONE.json"
    before = (done.read_text(), done.stat().st_mtime_ns, (final / "model.safetensors").stat().st_mtime_ns)
    assert pretrain(tiny_pretrain(out)) == final
    assert (done.read_text(), done.stat().st_mtime_ns, (final / "model.safetensors").stat().st_mtime_ns) == before
    assert f"{out}: finished already (DONE.json); its result is {final}" in capsys.readouterr().out
    with pytest.raises(RunFolderError, match=r"holds a finished run with lr=0.002, this config has 0.001"):
        pretrain(tiny_pretrain(out, lr=1e-3))
    pretrain(tiny_pretrain(out, max_steps=16, extend=True))  # more steps, from the last checkpoint
    extended = json.loads(done.read_text())
    assert extended["steps"] == 16 and extended["resume_points"] == [12]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == list(range(1, 17))


def test_resume_false_moves_the_old_run_aside_so_a_killed_restart_cannot_pick_it_up(tmp_path):
    out = tmp_path / "run"
    pretrain(tiny_pretrain(out))  # the old run: finished, checkpoints 4, 8, 12 (2 kept)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_pretrain(out, resume=False, lr=1e-3), callbacks=[interrupted_at(6)])
    aside = [p for p in out.iterdir() if p.name.startswith(".previous-")]
    assert len(aside) == 1 and (aside[0] / "final").is_dir() and (aside[0] / "checkpoint-12").is_dir()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]  # the fresh run's own
    assert (aside[0] / "metrics.jsonl").is_file()  # the old run's records went with it
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == list(range(1, 6))
    pretrain(tiny_pretrain(out, lr=1e-3))  # restarted: resumes the fresh run (lr 1e-3), not the old one
    done = json.loads((out / "DONE.json").read_text())
    assert done["resumed_from"] == str(out / "checkpoint-4") and done["resume_points"] == [4]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == list(range(1, 13))


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once_when_started_again(tmp_path, capsys):
    """Killed at step 3 (the first checkpoint is at 4): the next start is from scratch and its metrics.jsonl has
    steps 1..12 once, not the killed attempt's 1..3 before them; a resumed run says where it resumes from."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_pretrain(out), callbacks=[interrupted_at(3)])
    assert not list(out.glob("checkpoint-*"))
    pretrain(tiny_pretrain(out))
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == list(range(1, 13))
    assert "resuming from" not in capsys.readouterr().out
    pretrain(tiny_pretrain(out, max_steps=16, extend=True))
    assert f"{out}: resuming from {out / 'checkpoint-12'} (the last complete checkpoint)" in capsys.readouterr().out


def test_ctrl_c_ends_a_command_with_one_line_saying_how_to_resume(tmp_path):
    """SIGINT (what Ctrl-C sends) to a running pretraining: no traceback, one line naming the run folder and its
    last complete checkpoint, and the same command resumes from it."""
    import signal

    out = tmp_path / "run"
    command = [sys.executable, "recipes/pretrain.py", "--config", "recipes/configs/pretrain/world_tiny.yaml",
               "--output_dir", str(out), "--save_steps", "2", "--max_steps", "400"]  # fmt: skip
    # A suite started in the background (`nohup ... &`) ignores SIGINT, and children inherit that: give the
    # command the default disposition a terminal's foreground process has.
    run = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"},
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 300
    while not list(out.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline and run.poll() is None:
        time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    stderr = run.communicate(timeout=120)[1]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    last = next((line for line in stderr.splitlines() if "interrupted" in line), "")  # progress bars may follow
    assert last.startswith(f"pretrain.py: interrupted during the run in {out} (its last complete checkpoint is "
                           f"{out}/checkpoint-") and last.endswith("); run the same command again to resume"), last  # fmt: skip
    assert not (out / LOCK_FILE).exists()


def test_rotation_goes_by_step_number_and_keeps_the_newest_complete_checkpoint(tmp_path):
    for step, complete in ((20, True), (60, False), (80, True), (100, True)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    os.utime(tmp_path / "checkpoint-80", (1, 1))  # oldest by modification time, newest but one by step
    rotate_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-100", "checkpoint-80"]


def test_a_checkpoint_killed_while_writing_its_trainer_state_is_not_resumed_from(tmp_path):
    """Trainer writes `trainer_state.json` last and in place: a kill in the middle of it leaves the file empty or
    cut. Such a checkpoint is incomplete (CI, 2026-12-05: the resumed run failed on "Expecting value: line 1
    column 1"): the run resumes from the one before, and rotation clears it once a newer one is complete."""
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_pretrain(out), callbacks=[interrupted_at(10)])
    state = out / "checkpoint-8" / "trainer_state.json"
    state.write_text(state.read_text()[:40])  # cut in the middle of the write
    assert last_complete_checkpoint(out).name == "checkpoint-4"
    state.write_text("")  # or before anything was written
    assert last_complete_checkpoint(out).name == "checkpoint-4"
    pretrain(tiny_pretrain(out))
    done = json.loads((out / "DONE.json").read_text())
    assert done["resume_points"] == [4] and done["steps"] == 12
    assert json.loads(state.read_text())["global_step"] == 8  # written again, whole

    for step, text in ((20, "{}"), (40, ""), (60, '{"global_st'), (80, "{}")):
        (tmp_path / "rotated" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "rotated" / f"checkpoint-{step}" / "trainer_state.json").write_text(text)
    rotate_checkpoints(tmp_path / "rotated", keep=2)
    assert sorted(p.name for p in (tmp_path / "rotated").iterdir()) == ["checkpoint-20", "checkpoint-80"]


def test_a_killed_runs_staging_folders_are_removed_and_the_records_are_honest(tmp_path):
    """A resumed run: no stray `.checkpoint-N.tmp-*` folders, `metrics.jsonl` with each step once and the resume
    point, `DONE.json`'s loss over the whole run (as the uninterrupted run's)."""
    straight = json.loads((Path(pretrain(tiny_pretrain(tmp_path / "straight"))).parent / "DONE.json").read_text())
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_pretrain(out), callbacks=[interrupted_at(10)])
    (out / ".checkpoint-12.tmp-abc").mkdir()  # what a save killed mid-way leaves
    (out / ".final.old-123").mkdir()
    pretrain(tiny_pretrain(out))
    assert not [p for p in out.iterdir() if p.name.startswith((".checkpoint", ".final"))]
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 13))  # steps 9 and 10 were logged by the killed attempt and again after
    done = json.loads((out / "DONE.json").read_text())
    assert done["resume_points"] == [8] and done["train_loss"] == pytest.approx(straight["train_loss"], rel=0.02)


def test_rejection_sampling_shards_of_another_config_are_refused(tmp_path, chat_model, reward_models):
    from align.rejection_sampling import RejectionSamplingConfig, run_rejection_sampling

    def config(**overrides):
        values = dict(policy=str(chat_model), helpfulness_rm=str(reward_models["helpfulness"]),
                      safety_rm=str(reward_models["safety"]), output_dir=str(tmp_path / "rs"), prompts="world",
                      world_prompts=3, num_samples=2, max_new_tokens=8)  # fmt: skip
        return RejectionSamplingConfig(**{**values, **overrides})

    kept = run_rejection_sampling(config())
    (tmp_path / "rs" / "DONE.json").unlink()  # as if killed after sampling: the shards remain
    with pytest.raises(RunFolderError, match=r"holds a run with num_samples=2, this config has 4"):
        run_rejection_sampling(config(num_samples=4, temperature=0.5))
    assert run_rejection_sampling(config()) == kept  # the same config resumes from its shards


def test_killed_at_ten_random_moments_during_saves_resumes_to_the_same_bytes(tmp_path):
    """kill -9 at 10 random moments of a pretraining run that saves a checkpoint every step (half of them while
    a checkpoint folder is being written): every restart resumes, the final model is byte-identical to an
    uninterrupted run's, no staging folder is left and every step is logged once."""
    import random
    import signal

    def command(out: Path) -> list[str]:
        return [sys.executable, "recipes/pretrain.py", "--output_dir", str(out), "--dataset", "world",
                "--model_preset", "tiny", "--tokenizer", "data/tokenizer", "--seq_length", "64",
                "--per_device_batch_size", "4", "--max_steps", "200", "--warmup_steps", "2", "--lr", "2e-3",
                "--logging_steps", "1", "--save_steps", "1", "--world_documents", "300"]  # fmt: skip

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    straight = subprocess.run(command(tmp_path / "straight"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]

    def saving(out: Path) -> bool:  # a checkpoint folder without its trainer_state.json, or a staging folder
        return any(
            (p.name.startswith("checkpoint-") and not (p / "trainer_state.json").exists()) or p.name.startswith(".")
            for p in out.iterdir()
            if p.is_dir()
        )

    def newest_complete_step(out: Path) -> int:
        steps = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
        return max(steps, default=0)

    out, rng, killed_while_saving = tmp_path / "killed", random.Random(0), 0
    for kill in range(10):
        process = subprocess.Popen(command(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started, reached = time.time(), newest_complete_step(out)
        while process.poll() is None and newest_complete_step(out) <= reached:  # this attempt's first checkpoint
            time.sleep(0.01)
            assert time.time() - started < 120
        if kill % 2 == 0:
            time.sleep(rng.uniform(0, 0.1))  # any moment (a step with its save takes about 10 ms on 2 cores)
        else:
            deadline = time.time() + rng.uniform(0, 0.1)
            while process.poll() is None and not (time.time() > deadline and saving(out)):
                time.sleep(0.001)  # the first save after a random delay
        assert process.poll() is None, f"the run ended before kill {kill + 1}: {process.stderr.read()[-2000:]}"
        saving_now = saving(out)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed_while_saving += saving_now
    assert killed_while_saving >= 5
    finished = subprocess.run(command(out), cwd=ROOT, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    final, reference = out / "final" / "model.safetensors", tmp_path / "straight" / "final" / "model.safetensors"
    assert final.read_bytes() == reference.read_bytes()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != LOCK_FILE]
    assert not (out / LOCK_FILE).exists()
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 201))


def test_a_disk_that_fills_up_during_a_save_is_named_and_the_last_checkpoint_resumes(tmp_path, monkeypatch):
    """torch.save failing as on a full disk ("[enforce fail at inline_container.cc] ... unexpected pos") in the
    second checkpoint: one DiskFullError naming the folder and the free space, the first checkpoint intact, and
    the run resumes from it once there is room."""
    import torch

    from align.io import DiskFullError

    real_save = torch.save

    def save_on_a_disk_with_room_for_one_checkpoint(obj, path, *args, **kwargs):
        if "checkpoint-4" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4480 vs 4368")
        return real_save(obj, path, *args, **kwargs)

    config = tiny_pretrain(tmp_path / "run", max_steps=4, save_steps=2)
    monkeypatch.setattr(torch, "save", save_on_a_disk_with_room_for_one_checkpoint)
    with pytest.raises(DiskFullError, match=rf"disk full writing to {tmp_path / 'run'}: .* free; a checkpoint"):
        pretrain(config)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "run" / "checkpoint-2" / "trainer_state.json").is_file()
    pretrain(config)
    assert json.loads((tmp_path / "run" / "DONE.json").read_text())["resume_points"] == [2]


def test_a_failed_stage_call_gives_up_its_folder_at_once(tmp_path):
    """A stage that takes its folder and then finds bad input releases it in the same process (a notebook can
    run there again, another process too) and removes the folder it created: nothing is left."""
    bad = tmp_path / "texts.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 5}\n')
    with pytest.raises(ValueError, match=r"texts.jsonl: record 1 \(line 2\): field 'text': expected text, got 5"):
        pretrain(tiny_pretrain(tmp_path / "run", dataset=str(bad)))
    assert not (tmp_path / "run").exists()
    acquire_run_lock(tmp_path / "run")  # free for anyone
    release_run_lock(tmp_path / "run")


def test_the_parent_folders_a_run_made_go_too_and_a_folder_that_was_there_stays(tmp_path):
    """`--output_dir runs/sft` with no runs/ yet, stopped by bad input: neither is left behind; a parent that was
    there before (or that holds something by then) stays."""
    acquire_run_lock(tmp_path / "runs" / "mine" / "sft")
    release_run_lock(tmp_path / "runs" / "mine" / "sft")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "runs" / "pretrain").mkdir(parents=True)
    acquire_run_lock(tmp_path / "runs" / "mine" / "sft")
    release_run_lock(tmp_path / "runs" / "mine" / "sft")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["pretrain"]


def test_export_never_removes_a_folder_it_did_not_write_nor_writes_onto_its_input(tmp_path, chat_model, capsys):
    """`align export` into a folder holding the user's files, or onto the checkpoint it exports, is one line and
    exit 2 with nothing changed; into a new folder and again into that (its own earlier output) it works."""
    from align.cli.export import main as export

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's notes")
    for output, named in ((mine, "notes.txt"), (chat_model, "holds the checkpoint being exported")):
        before = sorted((p.name, p.stat().st_mtime_ns) for p in Path(output).iterdir())
        with pytest.raises(SystemExit) as exit:
            export(["--model", str(chat_model), "--output_dir", str(output)], prog="align export")
        error = capsys.readouterr().err.strip().splitlines()
        assert exit.value.code == 2 and len(error) == 1 and named in error[0], error
        assert sorted((p.name, p.stat().st_mtime_ns) for p in Path(output).iterdir()) == before
    for _ in range(2):
        export(["--model", str(chat_model), "--output_dir", str(tmp_path / "llama")], prog="align export")
    assert json.loads((tmp_path / "llama" / "config.json").read_text())["model_type"] == "llama"


@pytest.mark.parametrize("stage", ["sft", "reward_model", "ppo"])
def test_a_loss_or_weights_gone_non_finite_stop_the_stage_at_that_step_without_final(stage, user_models, tmp_path):
    """An lr of 1e30 (finite, so accepted) blows the weights up within a few steps: each trainer stops with the
    step named, no checkpoint of a non-finite step is saved and final/ and DONE.json are not written."""
    from safetensors.torch import load_file

    from align.checkpoint import NonFiniteTrainingError
    from align.ppo import PPOConfig, PPOTrainer
    from align.prompts import load_prompts
    from align.reward_model import RewardModelConfig, train_reward_model
    from align.sft import SFTConfig, sft

    data, models = user_models
    out = tmp_path / stage
    small = dict(output_dir=str(out), lr=1e30, max_length=256, per_device_batch_size=4, max_steps=6, save_steps=1,
                 logging_steps=1)  # fmt: skip
    if stage == "sft":
        run = lambda: sft(SFTConfig(model=data["model"], dataset=data["sft"], **small))  # noqa: E731
    elif stage == "reward_model":
        run = lambda: train_reward_model(RewardModelConfig(  # noqa: E731
            model=models["sft"], target="helpfulness", helpfulness_data=data["helpfulness"],
            safety_data=data["safety"], eval_data=data["helpfulness_eval"], **small))  # fmt: skip
    else:
        config = PPOConfig(policy=models["sft"], helpfulness_rm=models["helpfulness"], safety_rm=models["safety"],
                           prompts=data["prompts"], output_dir=str(out), lr=1e30, num_iterations=6, batch_size=4,
                           mini_batch_size=2, response_length=6, save_steps=1)  # fmt: skip
        run = PPOTrainer.from_config(config, load_prompts(data["prompts"])).train
    unit = "iteration" if stage == "ppo" else "step"
    with pytest.raises(NonFiniteTrainingError, match=rf"training stopped at {unit} \d+: the (loss|weights)"):
        run()
    assert not (out / "final").exists() and not (out / "DONE.json").exists() and not (out / LOCK_FILE).exists()
    for weights in out.glob("checkpoint-*/**/*.safetensors"):
        assert all(tensor.isfinite().all() for tensor in load_file(weights).values()), weights


def test_a_field_an_earlier_version_did_not_record_counts_as_its_default(tmp_path):
    """A run folder of an earlier version lacks a field added since (e.g. rejection sampling's min_reward_gain):
    it resumes when the field is left at its default (that version's behaviour), and is refused naming the
    field when it is set to something else."""
    from dataclasses import dataclass

    from align.checkpoint import RUN_CONFIG, check_same_run, field_defaults, recorded_config

    @dataclass
    class Config:
        lr: float = 1e-3
        new_setting: float = 0.0

    (tmp_path / RUN_CONFIG).write_text(json.dumps({"lr": 1e-3}))  # recorded before new_setting existed
    check_same_run(tmp_path, recorded_config(Config()), "a run", field_defaults(Config()))
    with pytest.raises(RunFolderError, match=r"holds a run with new_setting=None, this config has 0.1"):
        check_same_run(tmp_path, recorded_config(Config(new_setting=0.1)), "a run", field_defaults(Config()))
    with pytest.raises(RunFolderError, match=r"new_setting"):  # without defaults a missing field differs
        check_same_run(tmp_path, recorded_config(Config()), "a run")
    with pytest.raises(RunFolderError, match=r"holds a run with lr=0.001, this config has 0.002"):
        check_same_run(tmp_path, recorded_config(Config(lr=2e-3)), "a run", field_defaults(Config()))
