"""Public benchmarks through lm-evaluation-harness (align/benchmarks.py): `align evaluate` and the rounds'
`--benchmarks`, on a local task YAML over a small local file (no download), checked against the harness's own
`simple_evaluate` on the same checkpoint."""

import json
from pathlib import Path

import pytest

QUESTIONS = [("How do I boil an egg?", ["Boil water, add the egg, wait nine minutes.", "Paint it blue."], 0),
             ("Name a saw.", ["A cloud.", "A hand saw cuts wood."], 1),
             ("What is 2 plus 2?", ["4", "22"], 0),
             ("Which tool drives nails?", ["A spoon.", "A hammer."], 1)]  # fmt: skip


def local_task(folder: Path) -> Path:
    """A multiple-choice harness task `mini_mc` over a local JSONL file."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "mini.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    (folder / "mini.yaml").write_text(
        "task: mini_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return folder


def harness(model_dir, tasks_dir) -> dict:
    """The harness's own numbers for `mini_mc`, without align in between."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    output = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32",
                                     tasks=["mini_mc"], task_manager=TaskManager(include_path=str(tasks_dir)),
                                     device="cpu", batch_size=8)  # fmt: skip
    return output["results"]["mini_mc"]


def test_align_evaluate_gives_the_harness_numbers_and_names_an_unknown_task(tmp_path, user_models, capsys):
    from align.cli.evaluate import main as evaluate

    tasks = local_task(tmp_path / "tasks")
    model = user_models[1]["sft"]
    evaluate(["--model", model, "--benchmarks", "mini_mc", "--benchmark_include_path", str(tasks),
              "--output", str(tmp_path / "bench.json")], prog="align evaluate")  # fmt: skip
    written = json.loads((tmp_path / "bench.json").read_text())["results"]["mini_mc"]
    direct = harness(model, tasks)
    assert written == pytest.approx({"acc,none": direct["acc,none"], "acc_norm,none": direct["acc_norm,none"]})
    assert "mini_mc: acc,none" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        evaluate(["--model", model, "--benchmarks", "mini_mcq", "--benchmark_include_path", str(tasks)],
                 prog="align evaluate")  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and error == [f"align evaluate: error: benchmarks: no lm-evaluation-harness task "
                                              f"'mini_mcq' (nor a YAML task of that name in {tasks})"]  # fmt: skip


def test_a_round_with_benchmarks_reports_each_task_per_round_as_the_harness_measures_it(tmp_path, user_models):
    import dataclasses

    from test_annotation import annotated_round

    import align.reports.rounds
    from align.rounds import Rounds

    tasks = local_task(tmp_path / "tasks")
    config, _ = annotated_round(tmp_path, user_models)
    config = dataclasses.replace(config, annotator=f"rm:{user_models[1]['helpfulness']}", benchmarks="mini_mc",
                                 benchmark_include_path=str(tasks))  # fmt: skip
    report = vars(align.reports.rounds)
    manifest = Rounds(config, evaluate_round=lambda n, c, f, s: report["evaluate_round"](
        n, c, f, {**s, "max_new_tokens": 12})).run()  # fmt: skip
    run_dir = Path(config.runs_dir) / config.name
    policy = manifest["rounds"]["1"]["rejection_sampling"]["final"]
    metrics = json.loads((run_dir / "round-1" / "evaluate" / "metrics.json").read_text())
    sft = json.loads((run_dir / "round-0" / "sft_metrics.json").read_text())
    assert metrics["bench/mini_mc"] == pytest.approx(harness(policy, tasks)["acc,none"])
    assert sft["bench/mini_mc"] == pytest.approx(harness(config.sft_model, tasks)["acc,none"])
    assert metrics["bench/mini_mc/metric"] == "acc,none"
    text = (run_dir / "report.md").read_text() if (run_dir / "report.md").exists() else \
        report["write_report"](run_dir).read_text()  # fmt: skip
    header = next(line for line in text.splitlines() if line.startswith("| round |"))
    assert header.rstrip(" |").split(" | ")[-2] == "mini_mc"  # the task's column, before Elo
    assert "- **mini_mc**: lm-evaluation-harness task mini_mc" in text
