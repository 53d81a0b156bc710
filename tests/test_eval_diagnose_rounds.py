"""eval/diagnose_rounds.py: a run's checkpoints found from its manifest wherever the script is run from."""

import json
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_paths_are_found_inside_the_run_folder_from_any_directory(tmp_path, monkeypatch):
    module = runpy.run_path(str(ROOT / "eval" / "diagnose_rounds.py"))
    run = tmp_path / "elsewhere" / "demo"
    stages = {"sft": "runs/demo/round-0/sft/final", "ppo": "runs/demo/round-3/ppo/final",
              "reward_model_helpfulness": "runs/demo/round-3/reward_model_helpfulness/final",
              "reward_model_safety": "runs/demo/round-3/reward_model_safety/final"}  # fmt: skip
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"rounds": {"3": {k: {"final": v} for k, v in stages.items()}}}))
    monkeypatch.chdir(tmp_path)  # not the folder the run was started from: runs/demo/... does not exist here
    checkpoints = module["round_checkpoints"](run, 3)
    assert checkpoints == {"policy": run / "round-3" / "ppo" / "final",
                           "helpfulness": run / "round-3" / "reward_model_helpfulness" / "final",
                           "safety": run / "round-3" / "reward_model_safety" / "final"}  # fmt: skip
    # From the folder the run was started in, the recorded paths are used as they are.
    (tmp_path / "runs" / "demo" / "round-3" / "ppo" / "final").mkdir(parents=True)
    assert module["in_run"](run, stages["ppo"]) == Path(stages["ppo"])


def test_what_rejection_sampling_kept_is_judged_by_its_recorded_reward_found_inside_the_run(tmp_path, monkeypatch):
    module = runpy.run_path(str(ROOT / "eval" / "diagnose_rounds.py"))
    choice = module["rejection_sampling_choice"]
    held = {}  # the reward models the script already holds, passed on to the scorer
    loader = staticmethod(lambda spec, loaded=None: (spec, loaded))
    monkeypatch.setitem(choice.__globals__, "RewardScorer", type("Loaded", (), {"load": loader}))
    run = tmp_path / "elsewhere" / "demo"
    reward = {"combine": "llama2_gate", "sources": {
        "helpfulness": {"model": "runs/demo/round-3/reward_model_helpfulness/final"},
        "safety": {"model": "runs/demo/round-3/reward_model_safety/final"},
        "knowledge": {"likelihood": "runs/demo/round-0/pretrain/final", "relative_to": "No.", "weight": 1.0,
                      "scope": "helpfulness"}}}  # fmt: skip
    config = {"helpfulness_rm": "", "safety_rm": "", "reward": reward, "min_reward_gain": 0.1}
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"rounds": {"3": {"rejection_sampling": {"config": config}},
                                                              "0": {"sft": {"final": "x"}}}}))  # fmt: skip
    monkeypatch.chdir(tmp_path)
    chosen = choice(run, 3, held)
    assert chosen["min_reward_gain"] == 0.1 and chosen["min_reward_gain_scale"] == "reward"  # recorded before it
    spec, loaded = chosen["reward"]
    assert loaded is held
    assert spec.combine == "llama2_gate" and spec.scope("knowledge") == "helpfulness"
    assert spec.sources["knowledge"]["likelihood"] == str(run / "round-0" / "pretrain" / "final")
    assert spec.sources["helpfulness"]["model"] == str(run / "round-3" / "reward_model_helpfulness" / "final")
    assert spec.sources["knowledge"]["relative_to"] == "No."
    assert choice(run, 0) == {}  # round 0 has no rejection sampling


def test_the_earlier_helpfulness_reward_models_are_those_the_run_has(tmp_path, monkeypatch):
    """Rounds 0..n-1's helpfulness reward models, found inside the run; a round 0 without one (reward models
    started from the SFT model each round) is left out rather than failing the diagnosis."""
    module = runpy.run_path(str(ROOT / "eval" / "diagnose_rounds.py"))
    run = tmp_path / "demo"
    run.mkdir()
    rounds = {"0": {"sft": {"final": "runs/demo/round-0/sft/final"}},
              **{str(n): {"reward_model_helpfulness": {"final": f"runs/demo/round-{n}/reward_model_helpfulness/final"}}
                 for n in (1, 2, 3)}}  # fmt: skip
    (run / "manifest.json").write_text(json.dumps({"rounds": rounds}))
    monkeypatch.chdir(tmp_path)
    found = module["earlier_helpfulness_rms"](run, 3)
    assert found == {n: run / f"round-{n}" / "reward_model_helpfulness" / "final" for n in (1, 2)}
