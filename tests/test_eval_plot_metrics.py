"""eval/plot_metrics.py: curves of metrics.jsonl, with the steps of an alarm shaded."""

import json
import runpy
from pathlib import Path

import pytest

PLOT = runpy.run_path(str(Path(__file__).resolve().parents[1] / "eval" / "plot_metrics.py"))


def write_ppo_metrics(folder: Path) -> None:
    """Ten iterations: the optimised reward rises, the judge falls from iteration 6, the alarm fires at 7-10."""
    folder.mkdir()
    lines = [
        {"step": step, "objective/scores": 0.1 * step, "objective/gold": 0.5 - 0.05 * max(0, step - 5),
         "objective/kl": 0.2 * step, "guard/alarm": float(step >= 7)}
        for step in range(1, 11)
    ]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_the_alarm_steps_are_shaded(tmp_path):
    run = tmp_path / "ppo"
    write_ppo_metrics(run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert PLOT["marked_steps"](records, "guard/alarm") == [7, 8, 9, 10]
    keys = ["objective/scores", "objective/gold", "objective/kl"]
    plain = PLOT["plot"]([run], keys, tmp_path / "plain.png")
    marked = PLOT["plot"]([run], keys, tmp_path / "marked.png", mark="guard/alarm")
    assert plain.stat().st_size > 0 and marked.read_bytes() != plain.read_bytes()


def test_a_run_without_metrics_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as stopped:
        PLOT["main"]([str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(f"plot_metrics: error: no metrics at {tmp_path / 'empty'}")


def test_the_trailing_mean_covers_fewer_points_at_the_start():
    assert PLOT["trailing_mean"]([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert PLOT["trailing_mean"]([2.0, 4.0], 10) == [2.0, 3.0]
