"""eval/bench/gpu.py, the GPU run sheet, run on the CPU with the tiny preset: every stage steps and reports a
throughput (and an MFU where it has one) against the matmul peak measured in the same run; a bad option is one
line and exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHEET = [sys.executable, "eval/bench/gpu.py", "--device", "cpu", "--preset", "tiny", "--num_hidden_layers", "2"]


def test_the_run_sheet_steps_every_stage_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [*SHEET, "--steps", "2", "--seq_length", "128", "--prompt_length", "16", "--response_length", "16",
         "--ppo_batch_size", "8", "--fsdp_processes", "2", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["matmul_peak_flops"] > 0
    stages = report["stages"]
    assert set(stages) == {"sft", "reward_model", "rejection_sampling", "ppo", "qlora", "fsdp"}
    rates = {"sft": "tokens_per_s", "reward_model": "pairs_per_s", "rejection_sampling": "new_tokens_per_s",
             "ppo": "samples_per_s", "qlora": "tokens_per_s", "fsdp": "tokens_per_s"}  # fmt: skip
    for stage, rate in rates.items():
        assert stages[stage][rate] > 0, (stage, stages[stage])
    for stage in ("sft", "reward_model", "rejection_sampling", "fsdp"):
        assert 0 < stages[stage]["mfu"] < 1, (stage, stages[stage])
    assert stages["fsdp"]["processes"] == 2
    assert stages["rejection_sampling"]["rows"] == 8 * 4  # prompts x samples, each decoded to its full length
    for decode in ("generate", "dynamic", "static"):
        assert stages["rejection_sampling"][f"{decode}_new_tokens_per_s"] > 0
    for stage in rates:
        assert stage in done.stdout


def test_bad_options_are_one_line():
    for option, expected in ((["--stages", "sft,dpo"], "--stages: unknown ['dpo']"),):
        done = subprocess.run([*SHEET, *option], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
