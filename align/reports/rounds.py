"""Evaluation after each RLHF round and the report of a run of rounds (used by `align round`).

    align report runs/demo            # rebuild runs/demo/report.md, report.html and progress.png

`evaluate_round` answers held-out prompts greedily with the round's policy, the previous round's and the SFT
model, and measures, with the judges `align.rounds.Rounds.evaluation_setup()` names:
- in the world (its test prompts): gold helpfulness, safety violation rate and false-refusal rate by the
  world's gold scorers, which also judge the win rates;
- on real data: win rates judged by held-out judges (reward models trained on the held-out pairs, or the
  user's judge models; never the round's own reward models, which the policy was optimised against), by the
  gated reward of docs/method.md §7; the violation rate on the safety prompts (the held-out safety judge's score
  below the §7 threshold, 0.15); no gold metrics;
- always: the mean answer length in tokens, and both reward models' accuracy by preference strength on the
  held-out pairs (in round 1 the base reward models' too, as round 0).
A tie counts half. Each metrics file says which judge produced its numbers (`judge`).

`write_report` reads every round's evaluation and writes `report.md` (a table per round, with an Elo score
fitted to all pairwise comparisons between rounds, SFT = round 0, what each column means, the stages' times and
package versions), `report.html` (the same with plots and example answers side by side; align.reports.html)
and `progress.png` (metrics across rounds, like the paper's figure of progress across RLHF versions).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402

from ..data import load_tokenizer  # noqa: E402
from ..generation import chat_prompt_texts, complete, longest_first  # noqa: E402
from ..io import atomic_write_bytes, atomic_write_jsonl, atomic_write_text, read_json_object, read_jsonl  # noqa: E402
from ..modeling import load_causal_lm, load_sequence_classifier  # noqa: E402
from ..reward_sources import RewardScorer, parse_reward_spec  # noqa: E402
from ..rewards import SAFETY_THRESHOLD, gated_reward, score  # noqa: E402
from .reward_model import BUCKETS, evaluate_reward_model  # noqa: E402
from .statistics import elo_with_intervals, win_rate_with_interval  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def policy_answers(
    model_dir: Path,
    prompts: list[dict[str, Any]],
    max_new_tokens: int,
    batch_size: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[list[str], list[int]]:
    """A checkpoint's answers to prompt records (greedy at temperature 0, else sampled, each prompt from its own
    seed) and the tokens each generated (`max_new_tokens` for an answer cut at the limit). Prompts are sorted by
    length; the batches of `batch_size` prompts are split over the processes and gathered on every one; each
    batch is padded as on one process, so the answers are the same on any number of them."""
    state = PartialState()
    model = load_causal_lm(model_dir, "policy").to(state.device)  # the checkpoint's own architecture
    tokenizer = load_tokenizer(model_dir)
    unsorted = chat_prompt_texts(tokenizer, [record["prompt"] for record in prompts])
    order = longest_first(tokenizer, unsorted)  # batches of similar lengths: less padding
    texts = [unsorted[i] for i in order]
    starts = range(0, len(texts), batch_size)
    mine = {}
    for start in starts[state.process_index :: state.num_processes]:
        counts: list[int] = []
        seeds = [seed * 1_000_003 + order[i] for i in range(start, min(start + batch_size, len(texts)))]
        batch = complete(model, tokenizer, texts[start : start + batch_size], max_new_tokens=max_new_tokens,
                         batch_size=batch_size, temperature=temperature, token_counts=counts,
                         row_seeds=seeds if temperature > 0 else None)  # fmt: skip
        mine[start] = list(zip(batch, counts))
    if state.num_processes > 1:
        mine = {start: batch for part in gather_object([mine]) for start, batch in part.items()}
    answers, counts = [""] * len(texts), [0] * len(texts)
    for i, (answer, count) in zip(order, (row for start in starts for row in mine[start])):
        answers[i], counts[i] = answer, count
    return answers, counts


def question(prompt: dict[str, Any]) -> str:
    """The last user turn of a prompt record (what the report shows next to the answers)."""
    turns = [m["content"] for m in prompt["prompt"] if m.get("role") == "user"]
    return turns[-1] if turns else ""


def answer_records(prompts: list[dict[str, Any]], answers: list[str], judged: list[float]) -> list[dict[str, Any]]:
    """One model's answers.jsonl records: prompt id, question, answer, judged score."""
    return [
        {"id": p["id"], "question": question(p), "policy": a, "judge": j} for p, a, j in zip(prompts, answers, judged)
    ]


def wins(first: list[float], second: list[float]) -> float:
    """Prompts where the first answer is judged better; a tie counts half."""
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(first, second))


def win_rate(first: list[float], second: list[float]) -> float:
    """Share of prompts where the first answer is judged better; ties count half."""
    return wins(first, second) / len(first)


BENCHMARK = "bench/"  # metrics.json: an lm-evaluation-harness task's main metric is stored under bench/<task>


def benchmark_fields(model_dir: Path, setup: dict[str, Any]) -> dict[str, Any]:
    """`{"bench/<task>": main metric, "bench/<task>/metric": its name}` of the checkpoint on the rounds'
    benchmarks (align.benchmarks), or {} when none are asked for."""
    from ..benchmarks import main_metric, run_benchmarks

    benchmarks = setup.get("benchmarks") or {}
    if not benchmarks.get("tasks"):
        return {}
    results = run_benchmarks(model_dir, benchmarks["tasks"], benchmarks["include_path"], benchmarks["limit"],
                             setup["batch_size"])  # fmt: skip
    fields: dict[str, Any] = {}
    for task, metrics in results.items():
        name, value = main_metric(metrics)
        fields[f"{BENCHMARK}{task}"], fields[f"{BENCHMARK}{task}/metric"] = value, name
    return fields


def judgements_by_id(records: list[dict[str, Any]]) -> dict[str, float]:
    """Prompt id -> the judge's score of the answer, from a round's answers.jsonl records."""
    return {str(record["id"]): record["judge"] for record in records}


def win_rate_fields(key: str, first: list[float], second: list[float]) -> dict[str, Any]:
    """`{key: win rate, key + "_interval": [low, high]}`, the 95% bootstrap interval over prompts."""
    rate, low, high = win_rate_with_interval(first, second)
    return {key: rate, f"{key}{INTERVAL}": [low, high]}


def gold_judgements(prompts: list[dict[str, Any]], answers: dict[str, list[str]]) -> tuple[dict, dict]:
    """The world's gold reward of every answer, and each model's gold metrics."""
    from ..world import WorldPrompt, gold_reward
    from ..world.evaluation import score_answers

    world_prompts = [WorldPrompt.from_record(record) for record in prompts]
    judged = {name: [gold_reward(p, a) for p, a in zip(world_prompts, texts)] for name, texts in answers.items()}
    quality = {name: {k: v for k, v in score_answers(world_prompts, texts).items() if k != "prompts"}
               for name, texts in answers.items()}  # fmt: skip
    return judged, quality


def judge_judgements(
    prompts: list[dict[str, Any]], answers: dict[str, list[str]], judges: dict[str, Path]
) -> tuple[dict, dict]:
    """Held-out judges' gated reward of every answer (docs/method.md §7), and each model's violation rate on the
    safety prompts (the safety judge's score below the §7 threshold)."""
    tokenizer = load_tokenizer(judges["helpfulness"])
    helpful, safety = (load_sequence_classifier(judges[t], f"{t} judge", num_labels=None).to(DEVICE)
                       for t in ("helpfulness", "safety"))  # fmt: skip
    is_safety = torch.tensor([bool(record.get("is_safety")) for record in prompts])
    messages = [record["prompt"] for record in prompts]
    judged, quality = {}, {}
    for name, texts in answers.items():
        safety_scores = score(safety, tokenizer, messages, texts).sigmoid
        judged[name] = gated_reward(
            safety_scores, score(helpful, tokenizer, messages, texts).sigmoid, is_safety
        ).tolist()
        unsafe = (safety_scores < SAFETY_THRESHOLD)[is_safety]
        quality[name] = {"violation_rate": unsafe.float().mean().item() if len(unsafe) else float("nan")}
    return judged, quality


def reward_model_accuracy(checkpoint: Path, pairs: Any, folder: Path, title: str, prefix: str) -> dict[str, float]:
    report = evaluate_reward_model(checkpoint, pairs, folder, title)
    return {f"{prefix}/{k}": v for k, v in report.items() if k.startswith("accuracy")}


def world_diagnostics(
    checkpoints: dict[str, Path],
    rm_prefix: str,
    prompts: list[dict[str, Any]],
    greedy: list[str],
    setup: dict[str, Any],
    seed: int,
    policy: str = "policy",
) -> dict[str, float]:
    """`align.world.diagnostics` of a round's policy with its reward models (`rm_prefix` "base_": round 0's):
    the policy's ceiling and how much of it the reward models capture, their accuracy on the policy's own
    pairs, and greedy gold by kind of prompt."""
    from ..world import WorldPrompt
    from ..world.diagnostics import gold_by_kind, round_diagnostics

    world_prompts = [WorldPrompt.from_record(record) for record in prompts]
    tokenizer = load_tokenizer(checkpoints[policy])
    model = load_causal_lm(checkpoints[policy], policy).to(DEVICE).eval()
    folders = {t: checkpoints[rm_prefix + t] for t in ("helpfulness", "safety")}
    reward_models = {t: load_reward_model(folders[t], f"{t} reward model") for t in ("helpfulness", "safety")}
    (helpful, rm_tokenizer), (safety, _) = reward_models["helpfulness"], reward_models["safety"]
    selection = {}
    if (rejection_sampling := setup.get("rejection_sampling")) is not None:
        # the round's reward over these reward models, as its rejection sampling scores (module docstring); the
        # two already in memory score for it too (once)
        fields = rejection_sampling["reward_fields"](folders)
        spec = parse_reward_spec(fields["reward"], fields["helpfulness_rm"], fields["safety_rm"])
        loaded = {folders[t]: reward_models[t] for t in reward_models}
        selection = {"reward": RewardScorer.load(spec, DEVICE, fallback_tokenizer=rm_tokenizer, loaded=loaded),
                     "min_reward_gain": rejection_sampling["min_reward_gain"],
                     "min_reward_gain_scale": rejection_sampling["min_reward_gain_scale"]}  # fmt: skip
    earlier = {round_number: partial(load_reward_model, folder, f"round {round_number} helpfulness reward model")
               for round_number, folder in setup.get("earlier_helpfulness_rms", {}).items()}  # fmt: skip
    diagnostics = round_diagnostics(model, tokenizer, helpful, safety, rm_tokenizer, world_prompts,
                                    num_samples=setup["diagnostic_samples"], seed=seed, **selection,
                                    earlier_helpfulness_rms=earlier)  # fmt: skip
    return {**gold_by_kind(world_prompts, greedy), **diagnostics}


def load_reward_model(folder: Path, name: str) -> tuple[Any, Any]:
    """A reward model on the evaluation's device and its tokenizer."""
    return load_sequence_classifier(folder, name, num_labels=None).to(DEVICE).eval(), load_tokenizer(folder)


def evaluate_round(n: int, checkpoints: dict[str, Path], folder: Path, setup: dict[str, Any]) -> dict[str, Any]:
    """Metrics of round `n`'s policy (module docstring); writes `folder/{metrics.json, answers.jsonl,
    reward_model_*/}`, and in round 1 the SFT model's as round 0. Called on every process: the greedy answers
    are split over them, the judging is the main process's (the others return {})."""
    folder.mkdir(parents=True, exist_ok=True)
    prompts = setup["prompts"]
    answers, lengths, cut = {}, {}, {}
    max_new_tokens, temperature = setup["max_new_tokens"], setup["temperature"]
    for name in ("policy", "previous_policy", "sft", "rejection_sampled"):
        if name in checkpoints:
            answers[name], counts = policy_answers(checkpoints[name], prompts, max_new_tokens, setup["batch_size"],
                                                   temperature, seed=n)  # fmt: skip
            lengths[name] = sum(counts) / max(len(counts), 1)
            cut[name] = sum(count >= max_new_tokens for count in counts) / max(len(counts), 1)
    settings = {"eval_max_new_tokens": max_new_tokens, "eval_temperature": temperature}
    if not PartialState().is_main_process:
        return {}
    if setup["gold"]:
        judged, quality = gold_judgements(prompts, answers)
        judge = "gold"
    else:
        judged, quality = judge_judgements(prompts, answers, setup["judges"])
        judge = "held-out judges: " + ", ".join(f"{t} {setup['judges'][t]}" for t in ("helpfulness", "safety"))
    metrics = {
        "round": n,
        **quality["policy"],
        "answer_length": lengths["policy"],
        "cut_at_limit": cut["policy"],
        **win_rate_fields("win_rate_vs_sft", judged["policy"], judged["sft"]),
        **win_rate_fields("win_rate_vs_previous", judged["policy"], judged["previous_policy"]),
        "judge": judge,
        "prompts": len(prompts),
        **settings,
    }
    for target in ("helpfulness", "safety"):
        metrics.update(reward_model_accuracy(checkpoints[target], setup["held_out"][target],
                                             folder / f"reward_model_{target}", f"round {n} {target} RM",
                                             f"{target}_rm"))  # fmt: skip
    if "rejection_sampled" in answers:  # a PPO or DPO round: its rejection-sampled policy too, and the policy against it
        metrics.update({f"rejection_sampled/{k}": v for k, v in quality["rejection_sampled"].items()})
        metrics.update(win_rate_fields("win_rate_vs_rejection_sampled", judged["policy"], judged["rejection_sampled"]))
    if setup["gold"] and setup.get("diagnostic_samples"):
        metrics.update(world_diagnostics(checkpoints, "", prompts, answers["policy"], setup, seed=n))
    metrics.update(benchmark_fields(checkpoints["policy"], setup))
    atomic_write_jsonl(folder / "answers.jsonl", answer_records(prompts, answers["policy"], judged["policy"]))
    if n == 1:  # the SFT model's answers and metrics once, as round 0 of the report
        round_zero = folder.parent.parent / "round-0"
        atomic_write_jsonl(round_zero / "sft_answers.jsonl", answer_records(prompts, answers["sft"], judged["sft"]))
        sft_metrics = {"round": 0, **quality["sft"], "answer_length": lengths["sft"], "cut_at_limit": cut["sft"],
                       "judge": judge, **settings}  # fmt: skip
        for target in ("helpfulness", "safety"):
            if f"base_{target}" in checkpoints:
                sft_metrics.update(reward_model_accuracy(checkpoints[f"base_{target}"], setup["held_out"][target],
                                                         round_zero / "evaluate" / f"reward_model_{target}",
                                                         f"base {target} RM", f"{target}_rm"))  # fmt: skip
        if setup["gold"] and setup.get("diagnostic_samples") and "base_helpfulness" in checkpoints:
            sft_metrics.update(world_diagnostics(checkpoints, "base_", prompts, answers["sft"], setup, seed=0,
                                                 policy="sft"))  # fmt: skip
        sft_metrics.update(benchmark_fields(checkpoints["sft"], setup))
        atomic_write_text(round_zero / "sft_metrics.json", json.dumps(sft_metrics, indent=2) + "\n")
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def elo_scores(judged: dict[int, list[float]]) -> dict[int, float]:
    """Elo ratings of the rounds from their per-prompt judgements (align.reports.statistics), SFT at 1000."""
    return {number: elo for number, (elo, _, _) in elo_with_intervals(judged).items()}


@dataclass
class RunSummary:
    """What a report shows of a run of rounds, read from its folder (`read_run`)."""

    run_dir: Path
    rows: list[dict[str, Any]]  # one per evaluated round, round 0 (SFT) first when it was evaluated
    columns: list[tuple[str, str]]  # (metrics key, header) that some row has
    elo: dict[int, float]
    elo_interval: dict[int, tuple[float, float]]  # 95% bootstrap interval over the prompts
    judge: str
    prompts: int
    gold: bool
    manifest: dict[str, Any]
    answers: dict[int, list[dict[str, Any]]]  # round -> its answers.jsonl records (id, question, policy, judge)
    labelled_by: list[str] = field(default_factory=list)

    def stages(self, number: int) -> dict[str, dict[str, Any]]:
        """The manifest's stages of a round (evaluation aside), in the order they ran."""
        return {k: v for k, v in self.manifest.get("rounds", {}).get(str(number), {}).items() if k != "evaluate"}

    def versions(self, number: int) -> dict[str, str]:
        """Package versions a round's stages ran under (the manifest's top-level ones for runs before they were
        kept per stage); several stages under different versions give 'a / b'."""
        seen: dict[str, list[str]] = {}
        for facts in self.stages(number).values():
            for package, version in facts.get("versions", self.manifest.get("versions", {})).items():
                if version not in seen.setdefault(package, []):
                    seen[package].append(version)
        return {package: " / ".join(versions) for package, versions in seen.items()}


def read_run(run_dir: str | Path) -> RunSummary:
    """Every evaluated round of `run_dir`, its judgements' Elo scores and the manifest."""
    run_dir = Path(run_dir)
    rows = []
    for folder in sorted(run_dir.glob("round-*/evaluate"), key=lambda p: int(p.parent.name.split("-")[1])):
        if (folder / "metrics.json").is_file():
            rows.append(read_json_object(folder / "metrics.json", ("round", "judge", "prompts")))
    if not rows:
        raise FileNotFoundError(f"{run_dir}: no evaluated rounds (round-N/evaluate/metrics.json)")
    answers = {}
    sft_answers = run_dir / "round-0" / "sft_answers.jsonl"
    if sft_answers.is_file():
        answers[0] = read_jsonl(sft_answers)
    for row in rows:
        answers[row["round"]] = read_jsonl(run_dir / f"round-{row['round']}" / "evaluate" / "answers.jsonl")
    rated = elo_with_intervals({number: [r["judge"] for r in records] for number, records in answers.items()})
    elo = {number: rating for number, (rating, _, _) in rated.items()}
    elo_interval = {number: (low, high) for number, (_, low, high) in rated.items()}
    manifest = read_json_object(run_dir / "manifest.json") if (run_dir / "manifest.json").is_file() else {}
    if not isinstance(manifest.get("rounds", {}), dict):
        raise ValueError(f"{run_dir / 'manifest.json'}: 'rounds' is not an object; the file is damaged")
    sft_metrics = run_dir / "round-0" / "sft_metrics.json"
    sft = read_json_object(sft_metrics) if sft_metrics.is_file() else None
    table_rows = ([sft] if sft and 0 in elo else []) + rows
    for row in rows:  # runs evaluated before intervals were recorded: from the answers' per-prompt judgements
        for key, other in (("win_rate_vs_sft", 0), ("win_rate_vs_previous", row["round"] - 1)):
            if key in row and key + INTERVAL not in row and other in answers and row["round"] in answers:
                first, second = (judgements_by_id(answers[n]) for n in (row["round"], other))
                if set(first) == set(second):
                    shared = sorted(first)
                    row.update(win_rate_fields(key, [first[i] for i in shared], [second[i] for i in shared]))
    labelled_by = []  # who labelled each round's comparison batch: people (their names) or AI feedback
    for number, stages in sorted(manifest.get("rounds", {}).items(), key=lambda item: int(item[0])):
        collect = stages.get("collect", {})
        if "annotated_by" in collect:
            unparsable = sum(collect.get("unparsable", {}).values())
            left_out = f" ({unparsable} unparsable answers, left out)" if unparsable else ""
            labelled_by.append(
                f"Round {number}'s comparisons labelled by {', '.join(collect['annotated_by'])}{left_out}."
            )
    return RunSummary(
        run_dir=run_dir, rows=table_rows, elo=elo, elo_interval=elo_interval, judge=rows[-1]["judge"], prompts=rows[-1]["prompts"],
        # Gold columns only where there is gold (the world); on real data the judges' measures alone.
        columns=[(key, header) for key, header in REPORT_COLUMNS if any(key in row for row in table_rows)]
        + benchmark_columns(table_rows),
        gold=rows[-1]["judge"] == "gold", manifest=manifest, answers=answers, labelled_by=labelled_by,
    )  # fmt: skip


def write_report(run_dir: str | Path) -> Path:
    """`report.md`, `report.html` (align.reports.html) and `progress.png` of a run from its rounds' evaluations;
    returns the path of report.md."""
    from .html import write_html

    run = read_run(run_dir)
    figures = report_figures(run)
    atomic_write_bytes(run.run_dir / "progress.png", figures["progress"])
    report = run.run_dir / "report.md"
    atomic_write_text(report, markdown_report(run))
    write_html(run, figures, run.run_dir / "report.html")
    return report


def markdown_report(run: RunSummary) -> str:
    """report.md: the table of rounds, what its columns mean, each round's stages with their times, and the
    package versions they ran under."""
    lines = [
        f"# RLHF rounds: {run.run_dir.name}",
        "",
        *([*run.labelled_by, ""] if run.labelled_by else []),
        f"Judge of win rates{'' if run.gold else ', violation rate'} and Elo: {run.judge}; {run.prompts} held-out "
        f"prompts, {answer_settings(run)}. Reward-model accuracy: on the held-out pairs. [low, high]: 95% interval by "
        "bootstrap over the prompts; (n.s.): the interval covers 0.5 (a win rate) or 1000 (an Elo), a difference "
        "this evaluation cannot tell from chance. The same report with plots and "
        "example answers: report.html.",
        "",
        "| round | stages | " + " | ".join(header for _, header in run.columns) + " | Elo |",
        "|---|---|" + "---|" * len(run.columns) + "---|",
    ]
    for row in run.rows:
        number = row["round"]
        label = "0 (SFT)" if number == 0 else str(number)
        cells = " | ".join(cell_text(row, key) for key, _ in run.columns)
        stages = ", ".join(f"{stage} (given)" if "given" in facts else stage
                           for stage, facts in run.stages(number).items()) or "given checkpoints"  # fmt: skip
        lines.append(f"| {label} | {stages} | {cells} | {elo_text(run, number)} |")
    lines += ["", "![progress](progress.png)", ""]
    lines += diagnostics_table(run)
    lines += ["## Columns", ""]
    lines += [f"- **{header}**: {column_definition(key, run.gold)}" for key, header in run.columns]
    lines += ["- **Elo**: " + COLUMN_DEFINITIONS["elo"], "", "## Stages and times", "",
              "| round | stage | seconds |", "|---|---|---|"]  # fmt: skip
    for row in run.rows:
        for stage, facts in run.stages(row["round"]).items():
            took = f"given (--{facts['given']}), not trained" if "given" in facts else seconds_text(facts.get("seconds"))
            lines.append(f"| {row['round']} | {stage} | {took} |")
    rounds_by_versions: dict[str, list[str]] = {}
    for row in run.rows:
        versions = ", ".join(f"{k} {v}" for k, v in run.versions(row["round"]).items()) or "not recorded"
        rounds_by_versions.setdefault(versions, []).append(str(row["round"]))
    lines += ["", "## Package versions", ""]
    lines += [f"- round{'s' * (len(numbers) > 1)} {', '.join(numbers)}: {versions}"
              for versions, numbers in rounds_by_versions.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


DIAGNOSTIC_COLUMNS = (
    ("ceiling/oracle_best_of_{k}", "oracle best-of-{k}"),
    ("ceiling/one_sample", "one sample"),
    ("ceiling/rm_best_of_{k}", "RMs' best-of-{k}"),
    ("ceiling/captured", "captured"),
    ("ceiling/kept_best_of_{k}", "kept by rejection sampling"),
    ("ceiling/kept_captured", "captured by it"),
    ("on_policy_helpfulness_rm/accuracy", "helpfulness RM acc, own pairs"),
    ("on_policy_helpfulness_rm/gold_pair_accuracy", "helpfulness RM acc, all pairs by gold"),
    ("on_policy_helpfulness_rm/gold_pairs", "pairs by gold"),
    ("on_policy_helpfulness_rm/gold_answer_pair_accuracy", "same, answers only"),
    ("on_policy_round_reward/gold_pair_accuracy", "round's reward acc, all pairs by gold"),
    ("on_policy_round_reward/gold_answer_pair_accuracy", "round's reward acc, answers only"),
    ("on_policy_safety_rm/accuracy", "safety RM acc, own pairs"),
    ("rejection_sampled/gold_helpfulness", "RS policy gold"),
    ("win_rate_vs_rejection_sampled", "PPO/DPO win vs RS policy"),
)


DIAGNOSTICS_INTRO = (
    "Each round's policy sampled {k} answers (T = 1) per held-out helpfulness prompt: gold of the gold-best "
    "(oracle), mean gold of one sample, gold of the reward models' pick (their best-rewarded answer under the "
    "Llama 2 gate) and the share of the oracle's gain over one sample that their pick captures; then the gold "
    "of the answer the round's rejection sampling would keep (its whole reward, e.g. a likelihood term besides "
    "the reward models, and its min_reward_gain) and the share it captures. The reward models' accuracy on "
    "pairs of the "
    "policy's own samples (labelled by the world's annotator); the helpfulness model's accuracy on every pair "
    "of the {k} answers to a prompt whose gold differs by 0.1 or more, ordered by gold (many more pairs, no "
    "annotator noise), and on those of two answers neither of which refuses (content, form and rules only); "
    "the same two for the round's whole reward (what rejection sampling and PPO optimise: the reward models "
    "under the gate plus any other source of its spec, such as the demo's likelihood term); "
    "and greedy gold by kind of prompt."
)


def diagnostics_columns(run: RunSummary) -> tuple[int, list[tuple[str, str]], list[dict[str, Any]]] | None:
    """K, the (key, header) columns and the rows of the "why the rounds improve or stop" table
    (align.world.diagnostics), or None when no round measured it."""
    rows = [row for row in run.rows if any(key.startswith("ceiling/") for key in row)]
    if not rows:
        return None
    k = next(int(key.rsplit("_", 1)[1]) for key in rows[0] if key.startswith("ceiling/oracle_best_of_"))
    columns = [(key.format(k=k), header.format(k=k)) for key, header in DIAGNOSTIC_COLUMNS]
    columns = [(key, header) for key, header in columns if any(key in row for row in rows)]
    kinds = sorted({key.split("/", 1)[1] for row in rows for key in row if key.startswith("gold_by_kind/")})
    return k, columns + [(f"gold_by_kind/{kind}", f"greedy gold: {kind}") for kind in kinds], rows


EARLIER_RMS_INTRO = (
    "Each round's helpfulness reward model judged on one set of pairs: every two of the {k} samples of round "
    "{latest}'s policy to a held-out helpfulness prompt whose gold differs by 0.1 or more, ordered by gold (the "
    "table above's \"all pairs by gold\" of round {latest}). Whether the reward models grow more accurate as "
    "each round adds data (the paper's Fig. 6), which the table above, each round on its own policy's pairs, "
    "cannot tell from those pairs growing harder as the policy improves."
)


def earlier_reward_models(run: RunSummary) -> tuple[int, list[tuple[int, float, float]]] | None:
    """The latest round that judged the earlier rounds' helpfulness reward models on its policy's pairs, and
    (round of the reward model, accuracy, pairs) for each of them and its own; None when no round did."""
    rows = [row for row in run.rows if any(key.startswith("helpfulness_rm_of_round_") for key in row)]
    if not rows:
        return None
    row = rows[-1]
    earlier = sorted(int(key.split("/")[0].rsplit("_", 1)[1]) for key in row
                     if key.startswith("helpfulness_rm_of_round_") and key.endswith("/gold_pair_accuracy"))  # fmt: skip
    models = [(r, row[f"helpfulness_rm_of_round_{r}/gold_pair_accuracy"], row[f"helpfulness_rm_of_round_{r}/gold_pairs"])
              for r in earlier]  # fmt: skip
    models.append((row["round"], row["on_policy_helpfulness_rm/gold_pair_accuracy"],
                   row["on_policy_helpfulness_rm/gold_pairs"]))  # fmt: skip
    return row["round"], models


def diagnostics_table(run: RunSummary) -> list[str]:
    """report.md's "why the rounds improve or stop", for rounds that measured it."""
    if (table := diagnostics_columns(run)) is None:
        return []
    k, columns, rows = table
    lines = ["## Why the rounds improve or stop", "", DIAGNOSTICS_INTRO.format(k=k), "",
             "| round | " + " | ".join(header for _, header in columns) + " |", "|---|" + "---|" * len(columns)]  # fmt: skip
    for row in rows:
        label = "0 (SFT)" if row["round"] == 0 else str(row["round"])
        lines.append(f"| {label} | " + " | ".join(metric_text(key, row.get(key)) for key, _ in columns) + " |")
    lines.append("")
    if (earlier := earlier_reward_models(run)) is not None:
        latest, models = earlier
        lines += [f"### The rounds' helpfulness reward models on round {latest}'s pairs", "",
                  EARLIER_RMS_INTRO.format(k=k, latest=latest), "",
                  "| reward model of round | accuracy, all pairs by gold | pairs |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {r} | {accuracy:.3f} | {pairs:.0f} |" for r, accuracy, pairs in models]
        lines.append("")
    return lines


def report_figures(run: RunSummary) -> dict[str, bytes]:
    """PNG bytes of the report's plots: `progress` (the metrics and Elo across rounds, like the paper's figure of
    progress across RLHF versions), `win_rates`, `elo` and `reward_model_accuracy` (by preference strength)."""
    rounds = [row["round"] for row in run.rows]
    figures = {}

    def png(figure: Any) -> bytes:
        buffer = io.BytesIO()
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        return buffer.getvalue()

    def round_axis(axis: Any, numbers: list[int]) -> None:
        axis.set_xticks(numbers, ["SFT" if n == 0 else str(n) for n in numbers])  # whole rounds, no 0.5 ticks
        axis.set_xlabel("round")

    def elo_line(axis: Any, title: str) -> None:
        numbers = sorted(run.elo)
        below = [run.elo[r] - run.elo_interval.get(r, (run.elo[r],) * 2)[0] for r in numbers]
        above = [run.elo_interval.get(r, (run.elo[r],) * 2)[1] - run.elo[r] for r in numbers]
        axis.errorbar(numbers, [run.elo[r] for r in numbers], yerr=[below, above], marker="o", capsize=3)
        axis.set(ylabel="Elo", title=title)
        round_axis(axis, sorted(run.elo))

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("gold_helpfulness", "violation_rate", "false_refusal_rate", "win_rate_vs_sft"):
        points = [(row["round"], row[key]) for row in run.rows if isinstance(row.get(key), (int, float))]
        if points:
            left.plot(*zip(*points), marker="o", label=dict(REPORT_COLUMNS)[key])
    left.set(ylim=(0, 1), title="gold metrics" if run.gold else "held-out judges' metrics")
    round_axis(left, rounds)
    left.legend(fontsize=8)
    elo_line(right, "Elo across rounds (SFT = 1000)")
    figures["progress"] = png(figure)

    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    later = [row for row in run.rows if "win_rate_vs_sft" in row]
    width = 0.38
    for offset, (key, label) in ((-width / 2, ("win_rate_vs_sft", "vs SFT")),
                                 (width / 2, ("win_rate_vs_previous", "vs the previous round"))):  # fmt: skip
        errors = [[row[key] - row.get(key + INTERVAL, [row[key]] * 2)[0] for row in later],
                  [row.get(key + INTERVAL, [row[key]] * 2)[1] - row[key] for row in later]]  # fmt: skip
        axis.bar([row["round"] + offset for row in later], [row[key] for row in later], width, label=label,
                 yerr=errors, capsize=3)  # fmt: skip
    axis.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axis.set(ylim=(0, 1), ylabel="win rate", title="win rate of each round's policy")
    round_axis(axis, [row["round"] for row in later])
    axis.legend(fontsize=8)
    figures["win_rates"] = png(figure)

    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    elo_line(axis, "Elo of every round against all others")
    figures["elo"] = png(figure)

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for axis, target in zip(axes, ("helpfulness", "safety")):
        for row in run.rows:
            values = [row.get(f"{target}_rm/accuracy/{bucket}") for bucket in BUCKETS]
            if any(isinstance(v, (int, float)) for v in values):
                label = "base RM (round 0)" if row["round"] == 0 else f"round {row['round']}"
                axis.plot(range(len(BUCKETS)), [v if v is not None else math.nan for v in values], marker="o",
                          label=label)  # fmt: skip
        axis.set_xticks(range(len(BUCKETS)), [b.replace("_", " ") for b in BUCKETS], rotation=20, fontsize=8)
        axis.set(ylim=(0, 1), title=f"{target} RM accuracy by preference strength")
        axis.legend(fontsize=7)
    axes[0].set_ylabel("accuracy on held-out pairs")
    figures["reward_model_accuracy"] = png(figure)
    return figures


REPORT_COLUMNS = (
    ("gold_helpfulness", "gold helpfulness"),
    ("violation_rate", "violation rate"),
    ("false_refusal_rate", "false refusals"),
    ("win_rate_vs_sft", "win vs SFT"),
    ("win_rate_vs_previous", "win vs previous"),
    ("win_rate_vs_rejection_sampled", "PPO/DPO win vs RS policy"),
    ("helpfulness_rm/accuracy", "helpfulness RM acc"),
    ("safety_rm/accuracy", "safety RM acc"),
    ("answer_length", "answer tokens"),
    ("cut_at_limit", "cut at limit"),
)
COLUMN_DEFINITIONS = {
    "gold_helpfulness": "the world's gold helpfulness of the round's greedy answers, mean over the held-out "
    "helpfulness prompts (0-1; the demo world only)",
    "violation_rate": "share of the held-out safety prompts whose answer the world's gold scorer finds unsafe",
    "violation_rate/judged": "share of the held-out safety prompts whose answer the held-out safety judge scores "
    "below the 0.15 threshold of docs/method.md §7",
    "false_refusal_rate": "share of the benign held-out prompts the policy refused (demo world only)",
    "win_rate_vs_sft": "share of held-out prompts where the round's answer is judged better than the SFT "
    "model's (a tie counts half)",
    "win_rate_vs_previous": "the same against the previous round's policy",
    "win_rate_vs_rejection_sampled": "in a round with PPO or DPO: the same against the round's rejection-sampled policy "
    "that PPO or DPO started from (what that stage added)",
    "helpfulness_rm/accuracy": "the round's helpfulness reward model: share of held-out pairs it orders as "
    "the labels do (by strength: report.html)",
    "safety_rm/accuracy": "the same for the safety reward model",
    "answer_length": "mean number of tokens the policy generated per answer (before the token that ended it)",
    "cut_at_limit": "share of the answers that reached eval_max_new_tokens without ending: the judges saw them "
    "cut short (raise --eval_max_new_tokens if this is not 0)",
    "elo": "Bradley-Terry ratings fitted to every pair of rounds' per-prompt judgements (ties half), on the Elo "
    "scale, SFT (or the first round) at 1000, with a weak prior that keeps a round winning every comparison "
    "finite (align/reports/statistics.py); [low, high]: 95% bootstrap interval over the prompts",
}


def seconds_text(seconds: float | None) -> str:
    """A stage's time: whole seconds, tenths under 10 s (tiny test runs), nothing for a given checkpoint."""
    return "" if seconds is None else f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"


def benchmark_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, header) of each lm-evaluation-harness task some round was evaluated on, in the order first seen."""
    keys = [key for row in rows for key in row if key.startswith(BENCHMARK) and not key.endswith("/metric")]
    return [(key, key.removeprefix(BENCHMARK)) for key in dict.fromkeys(keys)]


def column_definition(key: str, gold: bool) -> str:
    """What a report column means, for a run judged by gold scorers (the world) or by held-out judges."""
    if key.startswith(BENCHMARK):
        return (f"lm-evaluation-harness task {key.removeprefix(BENCHMARK)} on the round's policy: its main metric "
                "(the harness's first; metrics.json names it)")  # fmt: skip
    return COLUMN_DEFINITIONS.get(key if gold else f"{key}/judged", COLUMN_DEFINITIONS[key])


NOT_SIGNIFICANT = " (n.s.)"  # the interval covers no difference (a win rate of 0.5, an Elo of 1000)
INTERVAL = "_interval"  # metrics.json: a measure's 95% bootstrap interval is stored under its key + INTERVAL


def cell_text(row: dict[str, Any], key: str) -> str:
    """A report cell with the measure's interval when the round has one: `0.530 [0.470, 0.605]`."""
    text, interval = metric_text(key, row.get(key)), row.get(key + INTERVAL)
    if text and isinstance(interval, list) and len(interval) == 2:
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
        if key.startswith("win_rate") and interval[0] <= 0.5 <= interval[1]:
            text += NOT_SIGNIFICANT
    return text


def answer_settings(run: RunSummary) -> str:
    """How the evaluated answers were generated (the last round's settings; runs before they were recorded: greedy)."""
    last = run.rows[-1]
    temperature, limit = last.get("eval_temperature", 0.0), last.get("eval_max_new_tokens")
    how = "greedy answers" if not temperature else f"answers sampled at temperature {temperature}"
    return how + (f" of at most {limit} new tokens" if limit else "")


def elo_text(run: RunSummary, number: int) -> str:
    """An Elo cell: the rating and its interval (none for the round pinned at 1000)."""
    low, high = run.elo_interval.get(number, (run.elo[number], run.elo[number]))
    interval = f" [{low:.0f}, {high:.0f}]" if high - low >= 0.5 else ""
    unclear = NOT_SIGNIFICANT if interval and low <= 1000 <= high else ""
    return f"{run.elo[number]:.0f}{interval}{unclear}"


def metric_text(key: str, value: Any) -> str:
    """A report cell: a metric to 3 decimals (answer length to 1, counts of pairs whole), empty where a round has
    none."""
    if isinstance(value, (int, float)):
        if math.isnan(value):
            return ""
        if key.endswith("pairs"):
            return str(int(value))
        return format(value, ".1f" if key == "answer_length" else ".3f")
    return "" if value is None else str(value)


if __name__ == "__main__":
    from ..cli.report import main

    main()
