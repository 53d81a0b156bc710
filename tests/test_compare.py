"""`align compare` on the tiny world: every method's rounds from one shared round 0, and the comparison table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from align.compare import METHODS, CompareConfig
from align.rounds import ROUND_STAGE_MARKER

ROOT = Path(__file__).resolve().parents[1]


def test_the_comparison_command_on_the_tiny_world_writes_its_table(tmp_path):
    """SFT, rejection sampling alone and iterative DPO (no rejection sampling), one round each with
    `--config world_tiny`: each method is a run of rounds under <name>/<method>/, round 0 is made once and shared
    (the same files), and comparison.md / .json / .png give each method's judged score, gold measures, win rate
    against SFT, Elo with intervals and wall time."""
    done = subprocess.run(
        [sys.executable, "-m", "align", "compare", "--round", "1", "--config", "world_tiny", "--name", "cmp",
         "--methods", "sft,rs,dpo"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "runs" / "cmp"
    rows = {row["method"]: row for row in json.loads((folder / "comparison.json").read_text())}
    assert list(rows) == ["sft", "rs", "dpo"]
    for method, row in rows.items():
        assert 0 <= row["judged"] <= 1 and row["judged_interval"][0] <= row["judged"] <= row["judged_interval"][1]
        assert row["judge"] == "gold" and 0 <= row["violation_rate"] <= 1 and "elo_interval" in row, method
    assert rows["sft"]["elo"] == 1000 and rows["sft"]["minutes"] == 0 and rows["rs"]["minutes"] > 0
    assert 0 <= rows["dpo"]["win_rate_vs_sft"] <= 1
    # Round 0 once: the second method's files are the first one's (hard links), not a second training.
    shared = "round-0/sft/final/model.safetensors"
    assert os.path.samefile(folder / "rs" / shared, folder / "dpo" / shared)
    assert "pretrain ..." not in done.stdout.split("[compare] dpo")[1]
    # ... and its records name the second method's copies, so removing the first method's folder breaks nothing.
    marker = folder / "dpo" / "round-0" / "sft" / ROUND_STAGE_MARKER
    assert json.loads(marker.read_text())["final"] == "runs/cmp/dpo/round-0/sft/final"
    assert not os.path.samefile(marker, folder / "rs" / "round-0" / "sft" / ROUND_STAGE_MARKER)
    round_zero = json.dumps(json.loads((folder / "dpo" / "manifest.json").read_text())["rounds"]["0"])
    assert "runs/cmp/dpo/round-0/reward_model_helpfulness/final" in round_zero and "cmp/rs/" not in round_zero
    # Iterative DPO: no rejection sampling, DPO from the previous policy (SFT in round 1).
    dpo_round = json.loads((folder / "dpo" / "manifest.json").read_text())["rounds"]["1"]
    assert "rejection_sampling" not in dpo_round and dpo_round["dpo"]["parent"].endswith("round-0/sft/final")
    assert "ppo" not in json.loads((folder / "rs" / "manifest.json").read_text())["rounds"]["1"]
    table = (folder / "comparison.md").read_text()
    assert "| iterative DPO (no rejection sampling) | 1 |" in table and "Highest judged score:" in table
    best = max((row for row in rows.values() if row["method"] != "sft"), key=lambda row: row["judged"])
    assert "best_wins" not in best and all(0 <= row["best_wins"] <= 1 for row in rows.values() if row is not best)
    assert "Its win rate head to head on the same prompts" in table
    assert (folder / "comparison.png").stat().st_size > 0 and (folder / "rs" / "report.md").is_file()


def test_bad_comparison_settings_are_refused():
    assert set(METHODS) == {"sft", "rs", "rs_ppo", "rs_dpo", "dpo"}
    with pytest.raises(ValueError, match="methods: expected some of sft,rs,rs_ppo,rs_dpo,dpo"):
        CompareConfig(methods="rs,best")
    with pytest.raises(ValueError, match="'sft' alone compares nothing"):
        CompareConfig(methods="sft")
    settings = CompareConfig(round=2, methods="rs_dpo").for_method("rs_dpo")
    assert (settings.ppo_from_round, settings.dpo_from_round, settings.rejection_sampling) == (0, 1, True)
    assert [settings.policy_stage(n) for n in (1, 2)] == ["dpo", "dpo"] and settings.name == "rs_dpo"


def test_a_comparison_folder_with_the_users_comparison_files_is_refused_and_kept(tmp_path):
    """`comparison.md` in <runs_dir>/<name>/ that no comparison wrote (no method run beside it): one line, exit 2,
    before any work, and the user's file is unchanged."""
    folder = tmp_path / "runs" / "mine"
    folder.mkdir(parents=True)
    (folder / "comparison.md").write_text("my notes\n")
    done = subprocess.run(
        [sys.executable, "-m", "align", "compare", "--round", "1", "--config", "world_tiny", "--name", "mine"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "comparison folder runs/mine: already holds comparison.md that align did not write" in done.stderr
    assert (folder / "comparison.md").read_text() == "my notes\n" and sorted(p.name for p in folder.iterdir()) == [
        "comparison.md"
    ]
