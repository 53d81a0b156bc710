"""eval/experiments/base_likelihood.py: causal LMs' mean log-probability of an answer as the judge of rm_contrasts.py's
pairs (an experiment of issue 33; the computation itself: tests/test_logprobs.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "eval" / "experiments" / "base_likelihood.py"


def test_the_script_judges_the_contrasts_with_a_model_or_names_a_missing_folder(chat_model, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "nope")], capture_output=True, text=True, env=env
    )
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and "nope" in run.stderr
    command = [sys.executable, str(SCRIPT), str(chat_model), "--prompts", "40", "--json", str(tmp_path / "table.json")]
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "near:arithmetic" in run.stdout and "refusal" in run.stdout
    (table,) = json.loads((tmp_path / "table.json").read_text()).values()
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["pairs"] > 0 for row in table.values())
