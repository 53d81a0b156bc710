"""Which method to run on your setup: the alignment methods side by side, with the same data and rounds, judged by
what the policy was never optimised against (docs/compare.md).

    align compare --round 3                        # the demo world: every method, 3 rounds each, judged by gold
    align compare --round 2 --methods sft,rs,rs_dpo ... (+ the data options of `align round`)

Each method is a run of `align round` under `<runs_dir>/<name>/<method>/` with the same options except the three
a method sets (`METHODS`): `rejection_sampling`, `ppo_from_round` and `dpo_from_round`. So every method collects
`pairs_per_round` new pairs per round from its own policy (equal data), retrains the same reward models and is
evaluated on the same held-out prompts by the same judges: the world's gold scorers in the demo, on your data the
held-out judges (`--judge_helpfulness_rm` / `--judge_safety_rm`, or trained once on your held-out pairs). Round 0
(pretraining and SFT in the demo, the base reward models and judges) is made once, by the first method, and
shared with the others as hard links, so no method pays for it again.

`comparison.md` (and `comparison.json`, `comparison.png`) under `<runs_dir>/<name>/` then gives, per method after
its last round: the mean judged score with its 95% bootstrap interval over prompts, gold helpfulness, violation
and false-refusal rates (the world), the win rate against the SFT model with its interval, an Elo score of all
methods fitted on the same prompts (SFT = 1000) with intervals, and the wall time of the method's rounds (its stages, not the evaluation).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import RunFolderError
from .io import atomic_write_bytes, atomic_write_text, read_json_object, read_jsonl
from .rounds import ROUND_STAGE_MARKER, Rounds, RoundsConfig

# What each method sets on the rounds; everything else is the same for all of them.
METHODS: dict[str, dict[str, Any]] = {
    "sft": {},  # the chat model every method starts from (round 0), judged as it is
    "rs": {"rejection_sampling": True, "ppo_from_round": 0, "dpo_from_round": 0},
    "rs_ppo": {"rejection_sampling": True, "ppo_from_round": 1, "dpo_from_round": 0},
    "rs_dpo": {"rejection_sampling": True, "ppo_from_round": 0, "dpo_from_round": 1},
    "dpo": {"rejection_sampling": False, "ppo_from_round": 0, "dpo_from_round": 1},
}
METHOD_NAMES = {
    "sft": "SFT (round 0)",
    "rs": "rejection sampling",
    "rs_ppo": "rejection sampling + PPO (Llama 2)",
    "rs_dpo": "rejection sampling + DPO (Llama 3)",
    "dpo": "iterative DPO (no rejection sampling)",
}
ALL_METHODS = ",".join(METHODS)


@dataclass
class CompareConfig(RoundsConfig):
    """The rounds' settings, shared by every method, and which methods to run."""

    name: str = field(default="compare", metadata={"help": "comparison name: runs under <runs_dir>/<name>/<method>/"})
    methods: str = field(
        default=ALL_METHODS,
        metadata={"help": f"comma-separated, among {', '.join(f'{k} ({v})' for k, v in METHOD_NAMES.items())}; each "
                          "sets rejection_sampling, ppo_from_round and dpo_from_round"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [method for method in self.method_list if method not in METHODS]
        if unknown or not self.method_list:
            raise ValueError(f"methods: expected some of {ALL_METHODS} (comma-separated), got {self.methods!r}")
        if not [method for method in self.method_list if method != "sft"]:
            raise ValueError("methods: 'sft' alone compares nothing; add a method that runs rounds (e.g. rs,rs_dpo)")

    @property
    def method_list(self) -> list[str]:
        return list(dict.fromkeys(name.strip() for name in self.methods.split(",") if name.strip()))

    @property
    def comparison_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def for_method(self, method: str) -> RoundsConfig:
        """The rounds of one method: these settings, the method's three, under `<runs_dir>/<name>/<method>/`."""
        settings = {f.name: getattr(self, f.name) for f in RoundsConfig.__dataclass_fields__.values() if f.init}
        settings.update(METHODS[method], runs_dir=str(self.comparison_dir), name=method)
        return RoundsConfig(**settings)


def share_round_zero(source: Path, target: Path) -> None:
    """Start the run `target` from the finished round 0 of `source`: `round-0/` as hard links (files are only ever
    replaced, never written in place, so neither run can change the other's) and the manifest's round-0 records,
    their paths moved to `target`'s copies (so `target` keeps working if `source` is removed)."""
    if target.exists() or not (source / "round-0").is_dir():
        return
    staging = target.with_name(target.name + ".sharing")
    shutil.rmtree(staging, ignore_errors=True)  # a share of ours that was interrupted
    shutil.copytree(source / "round-0", staging / "round-0", copy_function=os.link)
    markers = {marker: read_json_object(marker) for marker in (staging / "round-0").glob(f"*/{ROUND_STAGE_MARKER}")}
    origins = set()
    for marker, facts in markers.items():
        final, stage = str(facts.get("final", "")), f"round-0/{marker.parent.name}/"
        if stage in final:  # trained by the run (not a model the user gave): "<its run folder>/round-0/<stage>/..."
            origins.add(final[: final.index(stage)] + "round-0/")
    moved = functools.partial(moved_paths, origins=origins, new=f"{target}/round-0/")
    for marker, facts in markers.items():  # replaced, not written in place: the link to source's file breaks
        atomic_write_text(marker, json.dumps(moved(facts), indent=2, default=str) + "\n")
    manifest = read_json_object(source / "manifest.json", ("rounds",))
    manifest["rounds"] = {"0": moved(manifest["rounds"].get("0", {}))}
    atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    staging.rename(target)


def moved_paths(value: Any, origins: set[str], new: str) -> Any:
    """`value` (a stage's recorded facts) with every string that starts with one of `origins` starting with `new`."""
    if isinstance(value, str):
        origin = next((origin for origin in origins if value.startswith(origin)), None)
        return new + value[len(origin) :] if origin else value
    if isinstance(value, dict):
        return {key: moved_paths(item, origins, new) for key, item in value.items()}
    if isinstance(value, list):
        return [moved_paths(item, origins, new) for item in value]
    return value


COMPARISON_FILES = ("comparison.md", "comparison.json", "comparison.png")


def require_own_comparison_dir(folder: Path) -> None:
    """RunFolderError when `folder` holds a comparison.md/.json/.png that no earlier comparison wrote (no method's
    run beside it): `write_comparison` replaces those files, and align never replaces what it did not write."""
    theirs = [name for name in COMPARISON_FILES if (folder / name).exists()]
    ours = any((folder / method / "manifest.json").is_file() for method in METHODS)
    if theirs and not ours:
        raise RunFolderError(
            f"comparison folder {folder}: already holds {', '.join(theirs)} that align did not write; give another "
            "--name or --runs_dir (align never replaces what it did not write)"
        )


def run_methods(config: CompareConfig, evaluate_round: Any) -> dict[str, Path]:
    """Run every method's rounds (resuming what an earlier run left), round 0 once; returns method -> run folder."""
    require_own_comparison_dir(config.comparison_dir)
    runs: dict[str, Path] = {}
    first: Path | None = None
    for method in config.method_list:
        if method == "sft":
            continue
        method_config = config.for_method(method)
        if first is not None:
            share_round_zero(first, method_config.run_dir)
        print(f"[compare] {method}: {METHOD_NAMES[method]}, rounds 1..{config.round} in {method_config.run_dir}",
              flush=True)  # fmt: skip
        Rounds(method_config, evaluate_round=evaluate_round).run()
        runs[method] = method_config.run_dir
        first = first or method_config.run_dir
    return runs


def method_result(run_dir: Path, last_round: int) -> dict[str, Any]:
    """A method's evaluation after `last_round` (0: the SFT model), its per-prompt judgements and its wall time
    (the seconds of its training stages in rounds 1..last_round: not the evaluation; round 0 is shared)."""
    if last_round == 0:
        metrics = read_json_object(run_dir / "round-0" / "sft_metrics.json")
        answers = read_jsonl(run_dir / "round-0" / "sft_answers.jsonl")
        seconds = 0.0
    else:
        metrics = read_json_object(run_dir / f"round-{last_round}" / "evaluate" / "metrics.json")
        answers = read_jsonl(run_dir / f"round-{last_round}" / "evaluate" / "answers.jsonl")
        rounds = read_json_object(run_dir / "manifest.json", ("rounds",))["rounds"]
        seconds = sum(facts.get("seconds", 0.0) for n in range(1, last_round + 1)
                      for stage, facts in rounds.get(str(n), {}).items() if stage != "evaluate")  # fmt: skip
    return {"metrics": metrics, "judged": [float(record["judge"]) for record in answers], "seconds": seconds}


COLUMNS = (
    ("judged", "judged score"),
    ("gold_helpfulness", "gold helpfulness"),
    ("violation_rate", "violation rate"),
    ("false_refusal_rate", "false refusals"),
    ("win_rate_vs_sft", "win vs SFT"),
    ("elo", "Elo"),
    ("minutes", "wall time (min)"),
)


def comparison_rows(config: CompareConfig, runs: dict[str, Path]) -> list[dict[str, Any]]:
    """One row per method: its measures after the last round, intervals as [low, high] under `<key>_interval`."""
    from .reports.statistics import bootstrap_interval, elo_with_intervals, win_rate_with_interval

    first = next(iter(runs.values()))
    results = {"sft": method_result(first, 0)} | {m: method_result(d, config.round) for m, d in runs.items()}
    order = [m for m in config.method_list if m in results]
    if "sft" not in order:
        order.insert(0, "sft")  # the Elo's anchor, and what every method is measured against
    elo = elo_with_intervals({i: results[m]["judged"] for i, m in enumerate(order)})
    rows = []
    for index, method in enumerate(order):
        metrics, judged = results[method]["metrics"], np.array(results[method]["judged"])
        low, high = bootstrap_interval(lambda sample: sample.mean(1), judged[None, :])
        row = {"method": method, "name": METHOD_NAMES[method], "rounds": 0 if method == "sft" else config.round,
               "judged": float(judged.mean()), "judged_interval": [float(low[0]), float(high[0])],
               "elo": elo[index][0], "elo_interval": list(elo[index][1:]),
               "minutes": results[method]["seconds"] / 60, "judge": metrics.get("judge")}  # fmt: skip
        for key in ("gold_helpfulness", "violation_rate", "false_refusal_rate", "win_rate_vs_sft"):
            if key in metrics:
                row[key] = metrics[key]
        if "win_rate_vs_sft_interval" in metrics:
            row["win_rate_vs_sft_interval"] = metrics["win_rate_vs_sft_interval"]
        rows.append(row)
    # The best method head to head with each other one on the same prompts: a paired test of the ranking.
    best = max((row for row in rows if row["method"] != "sft"), key=lambda row: row["judged"])
    for row in rows:
        if row is not best:
            rate, low, high = win_rate_with_interval(results[best["method"]]["judged"], results[row["method"]]["judged"])
            row["best_wins"], row["best_wins_interval"] = rate, [low, high]
    return rows


def cell(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return ""
    value = row[key]
    text = f"{value:.0f}" if key == "elo" else f"{value:.1f}" if key == "minutes" else f"{value:.3f}"
    if f"{key}_interval" in row:
        low, high = row[f"{key}_interval"]
        text += f" [{low:.0f}, {high:.0f}]" if key == "elo" else f" [{low:.3f}, {high:.3f}]"
    return text


def comparison_markdown(config: CompareConfig, rows: list[dict[str, Any]]) -> str:
    """`comparison.md`: the table, what it measured with, and which method won by the judged score."""
    columns = [(key, header) for key, header in COLUMNS if any(key in row for row in rows)]
    judge = next((row["judge"] for row in rows if row.get("judge")), "not recorded")
    best = next(row for row in rows if "best_wins" not in row)  # comparison_rows compared the others with it
    lines = [
        f"# Methods compared: {config.name}",
        "",
        f"Each method ran {config.round} round(s) from the same round 0, {config.pairs_per_round} new pairs per data "
        f"set and round from its own policy, judged on the same held-out prompts by: {judge}. [low, high]: 95% "
        "bootstrap interval over the prompts; Elo: all methods fitted on the same prompts, SFT = 1000. Wall time: "
        "the method's stages in its rounds, the evaluation not included (round 0 is shared).",
        "",
        "| method | rounds | " + " | ".join(header for _, header in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append(f"| {row['name']} | {row['rounds']} | " + " | ".join(cell(row, k) for k, _ in columns) + " |")
    head_to_head = []
    for row in rows:
        if "best_wins" in row:
            low, high = row["best_wins_interval"]
            verdict = " (n.s.: not told apart)" if low <= 0.5 <= high else ""
            head_to_head.append(f"{row['name']} {row['best_wins']:.3f} [{low:.3f}, {high:.3f}]{verdict}")
    lines += ["", f"Highest judged score: {best['name']} ({best['judged']:.3f}). Its win rate head to head on the same "
              f"prompts (ties half) against {'; '.join(head_to_head)}.", "", "![comparison](comparison.png)", ""]  # fmt: skip
    return "\n".join(lines)


def comparison_figure(rows: list[dict[str, Any]]) -> bytes:
    """PNG: each method's judged score with its interval, and its wall time."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (score_axis, time_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [row["method"] for row in rows]
    means = [row["judged"] for row in rows]
    errors = [[m - row["judged_interval"][0] for m, row in zip(means, rows)],
              [row["judged_interval"][1] - m for m, row in zip(means, rows)]]  # fmt: skip
    score_axis.bar(names, means, yerr=errors, capsize=4, color="tab:blue")
    score_axis.set_ylabel("judged score (95% interval)")
    time_axis.bar(names, [row["minutes"] for row in rows], color="tab:gray")
    time_axis.set_ylabel("wall time of the rounds (min)")
    for axis in (score_axis, time_axis):
        axis.tick_params(axis="x", rotation=30)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def write_comparison(config: CompareConfig, runs: dict[str, Path]) -> Path:
    """`comparison.md`, `comparison.json` and `comparison.png` under the comparison folder; returns the .md."""
    rows = comparison_rows(config, runs)
    folder = config.comparison_dir
    atomic_write_text(folder / "comparison.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_bytes(folder / "comparison.png", comparison_figure(rows))
    atomic_write_text(folder / "comparison.md", comparison_markdown(config, rows))
    return folder / "comparison.md"

