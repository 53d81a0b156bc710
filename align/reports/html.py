"""`report.html`: a run of rounds as one self-contained page (inline CSS, plots embedded as PNG data; no script,
no network), to open from disk or attach to a message.

It shows the table of rounds (each header explains itself on hover and in "Columns"), on the world the "why the
rounds improve or stop" diagnostics (align.world.diagnostics), the progress, win-rate, Elo
and reward-model-accuracy-by-strength plots, example answers of every round side by side on the same held-out
prompts, and one section per round with its stages, their times and facts, and the package versions they ran
under. `align.reports.rounds.write_report` writes it next to `report.md`; `align report RUN_DIR` rebuilds it.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from ..io import atomic_write_text

if TYPE_CHECKING:
    from .rounds import RunSummary

EXAMPLES = 8  # held-out prompts shown with every round's answer
FIGURES = (
    ("progress", "Progress across rounds"),
    ("win_rates", "Win rates"),
    ("elo", "Elo"),
    ("reward_model_accuracy", "Reward-model accuracy by preference strength"),
)
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; } th, td { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f3f3f3; text-align: left; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
table.examples td { vertical-align: top; max-width: 22em; } .score { color: #666; font-size: 12px; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; } img { max-width: 100%; }
nav a { margin-right: 1em; } .muted { color: #666; }
"""


def round_label(number: int) -> str:
    return "SFT (round 0)" if number == 0 else f"round {number}"


def number_cell(text: str) -> str:
    return f'<td class="number">{escape(text)}</td>'


def rounds_table(run: RunSummary) -> str:
    from .rounds import COLUMN_DEFINITIONS, cell_text, column_definition, elo_text

    headers = "".join(f'<th title="{escape(column_definition(key, run.gold))}">{escape(header)}</th>'
                      for key, header in run.columns)  # fmt: skip
    rows = []
    for row in run.rows:
        number = row["round"]
        cells = "".join(number_cell(cell_text(row, key)) for key, _ in run.columns)
        stages = ", ".join(run.stages(number)) or "given checkpoints"
        rows.append(f'<tr data-round="{number}"><td><a href="#round-{number}">{escape(round_label(number))}</a></td>'
                    f"<td>{escape(stages)}</td>{cells}{number_cell(elo_text(run, number))}</tr>")  # fmt: skip
    elo_title = escape(COLUMN_DEFINITIONS["elo"])
    return (f'<table id="rounds"><tr><th>round</th><th>stages</th>{headers}<th title="{elo_title}">Elo</th></tr>'
            + "".join(rows) + "</table>")  # fmt: skip


def examples_table(run: RunSummary) -> str:
    """The first `EXAMPLES` held-out prompts every evaluated round answered, one column per round."""
    numbers = sorted(run.answers)
    by_round = {n: {record["id"]: record for record in run.answers[n]} for n in numbers}
    shared = [record["id"] for record in run.answers[numbers[-1]] if all(record["id"] in by_round[n] for n in numbers)]
    header = "".join(f"<th>{escape(round_label(n))}</th>" for n in numbers)
    rows = []
    for prompt_id in shared[:EXAMPLES]:
        question = next((by_round[n][prompt_id].get("question") for n in numbers if by_round[n][prompt_id].get(
            "question")), None)  # fmt: skip
        cells = "".join(
            f"<td>{escape(by_round[n][prompt_id]['policy'])}<div class=\"score\">judged "
            f"{by_round[n][prompt_id]['judge']:.2f}</div></td>"
            for n in numbers
        )
        asked = escape(question) if question else f'<span class="muted">{escape(prompt_id)}</span>'
        rows.append(f"<tr><td>{asked}</td>{cells}</tr>")
    return f'<table class="examples"><tr><th>prompt</th>{header}</tr>{"".join(rows)}</table>'


def round_section(run: RunSummary, number: int) -> str:
    """A round's stages (time and the facts that are numbers or short text) and package versions."""
    from .rounds import seconds_text

    rows = []
    for stage, facts in run.stages(number).items():
        shown = {k: v for k, v in facts.items() if k not in ("seconds", "versions", "config", "data_sources")
                 and isinstance(v, (int, float, str))}  # fmt: skip
        text = "; ".join(f"{k}: {format(v, '.4g') if isinstance(v, float) else v}" for k, v in shown.items())
        rows.append(f"<tr><td>{escape(stage)}</td>{number_cell(seconds_text(facts.get('seconds')))}"
                    f"<td>{escape(text)}</td></tr>")  # fmt: skip
    versions = ", ".join(f"{k} {v}" for k, v in run.versions(number).items())
    stages = (f"<table><tr><th>stage</th><th>seconds</th><th>facts</th></tr>{''.join(rows)}</table>" if rows
              else '<p class="muted">No stages recorded in manifest.json (given checkpoints).</p>')  # fmt: skip
    return (f'<section class="round" id="round-{number}" data-round="{number}"><h3>{escape(round_label(number))}'
            f"</h3>{stages}<p class=\"muted\">versions: {escape(versions) or 'not recorded'}</p></section>")  # fmt: skip


def diagnostics_html(run: RunSummary) -> str:
    """The "why the rounds improve or stop" table (world runs that measured it), as in report.md."""
    from .rounds import DIAGNOSTICS_INTRO, EARLIER_RMS_INTRO, diagnostics_columns, earlier_reward_models, metric_text

    if (table := diagnostics_columns(run)) is None:
        return ""
    k, columns, rows = table
    headers = "".join(f"<th>{escape(header)}</th>" for _, header in columns)
    body = "".join(f"<tr><td>{escape(round_label(row['round']))}</td>"
                   + "".join(number_cell(metric_text(key, row.get(key))) for key, _ in columns) + "</tr>"
                   for row in rows)  # fmt: skip
    page = (f'<h2 id="why">Why the rounds improve or stop</h2><p>{escape(DIAGNOSTICS_INTRO.format(k=k))}</p>'
            f'<table id="diagnostics"><tr><th>round</th>{headers}</tr>{body}</table>')  # fmt: skip
    if (earlier := earlier_reward_models(run)) is not None:
        latest, models = earlier
        cells = "".join(f"<tr><td>{r}</td>{number_cell(f'{accuracy:.3f}')}{number_cell(f'{pairs:.0f}')}</tr>"
                        for r, accuracy, pairs in models)  # fmt: skip
        title = f"The rounds' helpfulness reward models on round {latest}'s pairs"
        page += (f"<h3>{escape(title)}</h3>"
                 f"<p>{escape(EARLIER_RMS_INTRO.format(k=k, latest=latest))}</p><table id=\"earlier-reward-models\">"
                 f"<tr><th>reward model of round</th><th>accuracy, all pairs by gold</th><th>pairs</th></tr>{cells}"
                 "</table>")  # fmt: skip
    return page


def write_html(run: RunSummary, figures: dict[str, bytes], path: Path) -> Path:
    """Write the page for `run` with `figures` (PNG bytes by name, from `report_figures`) to `path`."""
    from .rounds import answer_settings, column_definition

    images = "".join(
        f'<figure><img alt="{escape(title)}" src="data:image/png;base64,{base64.b64encode(figures[name]).decode()}">'
        f"<figcaption>{escape(title)}</figcaption></figure>"
        for name, title in FIGURES
        if name in figures
    )
    definitions = "".join(f"<dt>{escape(header)}</dt><dd>{escape(column_definition(key, run.gold))}</dd>"
                          for key, header in [*run.columns, ("elo", "Elo")])  # fmt: skip
    labelled = "".join(f"<p>{escape(line)}</p>" for line in run.labelled_by)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>RLHF rounds: {escape(run.run_dir.name)}</title>
<style>{STYLE}</style></head>
<body>
<h1>RLHF rounds: {escape(run.run_dir.name)}</h1>
<p>Judge of win rates{"" if run.gold else ", violation rate"} and Elo: {escape(run.judge)}; {run.prompts} held-out
prompts, {escape(answer_settings(run))}. Reward-model accuracy: on the held-out pairs. [low, high]: 95% interval by bootstrap
over the prompts; (n.s.): the interval covers 0.5 (a win rate) or 1000 (an Elo), a difference this evaluation
cannot tell from chance.</p>{labelled}
<nav><a href="#rounds">Rounds</a><a href="#plots">Plots</a><a href="#examples">Example answers</a>
<a href="#round-details">Each round</a><a href="#columns">Columns</a></nav>
<h2>Rounds</h2>
{rounds_table(run)}
{diagnostics_html(run)}
<h2 id="plots">Plots</h2>
{images}
<h2 id="examples">Example answers</h2>
<p class="muted">The first {EXAMPLES} held-out prompts, each round's greedy answer and its judged score.</p>
{examples_table(run)}
<h2 id="round-details">Each round</h2>
{"".join(round_section(run, row["round"]) for row in run.rows)}
<h2 id="columns">Columns</h2>
<dl>{definitions}</dl>
</body></html>
"""
    atomic_write_text(path, page)
    return path
