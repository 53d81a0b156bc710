"""The rounds report (align.reports): report.md's columns, times and versions, and report.html opened in a real
browser (headless chromium): it renders without a console error, shows every round, its plots load, and
answers are shown as text."""

import json
from pathlib import Path

from align.io import atomic_write_jsonl
from align.reports.rounds import write_report
from conftest import browser, needs_browser

OLD = {"torch": "2.12.0", "transformers": "5.23.0"}
NEW = {"torch": "2.13.0", "transformers": "5.24.0"}


def write_run(run_dir: Path) -> Path:
    """A run of rounds 0-2 as `align round 2` leaves it; round 0 trained under older packages, and its answers
    written before answers carried their question (an older run)."""
    buckets = ("significantly_better", "better", "slightly_better", "negligibly_better", "unsure")
    accuracies = {f"{t}_rm/accuracy/{b}": 0.9 - 0.1 * i for t in ("helpfulness", "safety") for i, b in
                  enumerate(buckets)}  # fmt: skip
    manifest = {"versions": NEW, "rounds": {
        "0": {"sft": {"final": "sft/final", "seconds": 81.0, "versions": OLD}},
        **{str(n): {"collect": {"pairs": {"helpfulness": 30}, "seconds": 9.5, "versions": NEW},
                    "rejection_sampling": {"final": f"round-{n}/rs", "kept": 12, "seconds": 33.0, "versions": NEW}}
           for n in (1, 2)},
    }}  # fmt: skip
    (run_dir / "round-0").mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "round-0" / "sft_metrics.json").write_text(json.dumps(
        {"round": 0, "gold_helpfulness": 0.1, "violation_rate": 0.2, "answer_length": 7.0, "judge": "gold",
         **accuracies}))  # fmt: skip
    atomic_write_jsonl(run_dir / "round-0" / "sft_answers.jsonl",
                       [{"id": f"p{i}", "policy": f"sft answer {i}", "judge": 0.1} for i in range(10)])  # fmt: skip
    for n in (1, 2):
        folder = run_dir / f"round-{n}" / "evaluate"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(
            {"round": n, "gold_helpfulness": 0.3 * n, "violation_rate": 0.0, "win_rate_vs_sft": 0.6,
             "win_rate_vs_previous": 0.55, "answer_length": 8.0, "judge": "gold", "prompts": 10, **accuracies}))  # fmt: skip
        atomic_write_jsonl(folder / "answers.jsonl", [
            {"id": f"p{i}", "question": f"question {i}?", "policy": f"<script>alert({n})</script> answer {i}",
             "judge": 0.3 * n} for i in range(10)])  # fmt: skip
    return run_dir


def test_report_md_defines_its_columns_and_gives_times_and_versions(tmp_path):
    report = write_report(write_run(tmp_path / "run")).read_text()
    assert "| 0 (SFT) | sft | 0.100 | 0.200 |" in report
    # A run evaluated before intervals were recorded: win rates and their intervals from the answers' judgements.
    assert "| 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] |" in report and "95% interval by bootstrap" in report
    assert "## Columns" in report and "- **win vs SFT**: share of held-out prompts where" in report
    assert "| 1 | collect | 9.5 |" in report and "| 2 | rejection_sampling | 33 |" in report
    assert "- rounds 1, 2: torch 2.13.0, transformers 5.24.0" in report
    assert "- round 0: torch 2.12.0, transformers 5.23.0" in report  # what round 0 was trained with
    assert (tmp_path / "run" / "progress.png").stat().st_size > 0


@needs_browser
def test_report_html_renders_in_a_browser_and_shows_every_round(tmp_path):
    run_dir = write_run(tmp_path / "run")
    write_report(run_dir)
    page = run_dir / "report.html"
    text = page.read_text()
    assert "http://" not in text.replace('http://www.w3.org', "") and "<script" not in text  # nothing fetched or run
    driver = browser()
    try:
        driver.get(page.as_uri())
        assert driver.title == "RLHF rounds: run"
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        shown = driver.execute_script(
            "return [...document.querySelectorAll('section.round')].filter(s => s.offsetHeight > 0)"
            ".map(s => s.dataset.round)")  # fmt: skip
        assert shown == ["0", "1", "2"]
        table_rounds = driver.execute_script(
            "return [...document.querySelectorAll('#rounds tr[data-round]')].map(r => r.dataset.round)")
        assert table_rounds == ["0", "1", "2"]
        images = driver.execute_script(
            "return [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        assert [alt for alt, _ in images] == ["Progress across rounds", "Win rates", "Elo",
                                              "Reward-model accuracy by preference strength"]  # fmt: skip
        assert all(loaded for _, loaded in images)
        header = driver.execute_script("return [...document.querySelectorAll('table.examples th')].map(t => t.textContent)")
        assert header == ["prompt", "SFT (round 0)", "round 1", "round 2"]
        first = driver.execute_script("return document.querySelector('table.examples tr:nth-child(2)').innerText")
        assert "question 0?" in first and "<script>alert(2)</script> answer 0" in first  # text, not markup
    finally:
        driver.quit()


def test_a_damaged_manifest_or_metrics_file_is_one_line_naming_it(tmp_path, capsys):
    """`align report` on a run whose manifest.json or a round's metrics.json is damaged: one line naming the file,
    exit status 2, nothing written."""
    import pytest

    from align.cli.report import main as report

    damages = {"manifest.json": b'{"rounds": {"1": ', "round-1/evaluate/metrics.json": b"[1, 2]\n",
               "round-2/evaluate/metrics.json": b'{"gold_helpfulness": 0.3}\n',
               "round-0/sft_metrics.json": b"\xff\xfe"}  # fmt: skip
    for name, content in damages.items():
        run_dir = write_run(tmp_path / name.replace("/", "_"))
        (run_dir / name).write_bytes(content)
        with pytest.raises(SystemExit) as exit:
            report([str(run_dir)], prog="align report")
        error = capsys.readouterr().err.strip().splitlines()
        assert exit.value.code == 2 and len(error) == 1 and str(run_dir / name) in error[0], error
        assert not (run_dir / "report.md").exists()


def test_the_earlier_reward_models_on_the_latest_pairs_are_a_table_of_their_own(tmp_path):
    """The latest round that judged the earlier rounds' helpfulness reward models on its pairs gives a table,
    one row per round's model (its own last), in report.md and report.html; a run without them has none."""
    run = write_run(tmp_path / "run")
    for n in (1, 2):
        path = run / f"round-{n}" / "evaluate" / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics.update({"ceiling/oracle_best_of_8": 0.8, "ceiling/one_sample": 0.5,
                        "on_policy_helpfulness_rm/gold_pair_accuracy": 0.5 + 0.1 * n,
                        "on_policy_helpfulness_rm/gold_pairs": 100.0 * n})  # fmt: skip
        metrics.update({f"helpfulness_rm_of_round_{r}/gold_pair_accuracy": 0.4 + 0.1 * r for r in range(n)})
        metrics.update({f"helpfulness_rm_of_round_{r}/gold_pairs": 100.0 * n for r in range(n)})
        path.write_text(json.dumps(metrics))
    report = write_report(run).read_text()
    table = report.split("### The rounds' helpfulness reward models on round 2's pairs")[1].split("## Columns")[0]
    assert "| 0 | 0.400 | 200 |\n| 1 | 0.500 | 200 |\n| 2 | 0.700 | 200 |" in table
    html = (run / "report.html").read_text()
    assert "<h3>The rounds&#x27; helpfulness reward models on round 2&#x27;s pairs</h3>" in html
    assert html.split('id="earlier-reward-models"')[1].split("</table>")[0].count("<tr>") == 4  # header, 3 models
    plain = write_report(write_run(tmp_path / "plain")).read_text()
    assert "reward models on round" not in plain
