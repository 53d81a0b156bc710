"""Evaluation after each RLHF round and the report of a run of rounds (used by recipes/rlhf_round.py).

    python eval/rounds_report.py runs/demo            # rebuild runs/demo/report.md and progress.png

`evaluate_round` answers held-out prompts greedily with the round's policy, the previous round's and the SFT
model, and measures, with the judges `align.rounds.Rounds.evaluation_setup()` names:
- in the world (its test prompts): gold helpfulness, safety violation rate and false-refusal rate by the
  world's gold scorers, which also judge the win rates;
- on real data: win rates judged by held-out judges (reward models trained on the held-out pairs, or the
  user's judge models; never the round's own reward models, which the policy was optimised against), by the
  gated reward of PIPELINE.md §7; the violation rate on the safety prompts (the held-out safety judge's score
  below the §7 threshold, 0.15); no gold metrics;
- always: the mean answer length in tokens, and both reward models' accuracy by preference strength on the
  held-out pairs (in round 1 the base reward models' too, as round 0).
A tie counts half. Each metrics file says which judge produced its numbers (`judge`).

`write_report` reads every round's evaluation and writes `report.md` (a table per round, with an Elo score
fitted to all pairwise comparisons between rounds, SFT = round 0) and `progress.png` (metrics across rounds,
like the paper's figure of progress across RLHF versions).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import runpy
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402

from align.data import load_tokenizer  # noqa: E402
from align.generation import chat_prompt_texts, complete, longest_first  # noqa: E402
from align.io import atomic_write_jsonl, atomic_write_text, read_jsonl  # noqa: E402
from align.modeling import AlignLlamaForCausalLM, AlignLlamaForSequenceClassification  # noqa: E402
from align.rewards import SAFETY_THRESHOLD, gated_reward, score  # noqa: E402

REWARD_MODEL_REPORT = runpy.run_path(str(Path(__file__).resolve().parent / "reward_model_report.py"))
COLUMNS = ("gold_helpfulness", "violation_rate", "false_refusal_rate", "win_rate_vs_sft", "win_rate_vs_previous")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def greedy_answers(
    model_dir: Path, prompts: list[dict[str, Any]], max_new_tokens: int, batch_size: int = 64
) -> tuple[list[str], float]:
    """Greedy answers of a checkpoint to prompt records, and their mean length in tokens. Prompts are sorted by
    length; the batches of `batch_size` prompts are split over the processes and gathered on every one; each
    batch is padded as on one process, so the answers are the same on any number of them."""
    state = PartialState()
    model = AlignLlamaForCausalLM.from_pretrained(model_dir).to(state.device)
    tokenizer = load_tokenizer(model_dir)
    unsorted = chat_prompt_texts(tokenizer, [record["prompt"] for record in prompts])
    order = longest_first(tokenizer, unsorted)  # batches of similar lengths: less padding
    texts = [unsorted[i] for i in order]
    starts = range(0, len(texts), batch_size)
    mine = {
        start: complete(model, tokenizer, texts[start : start + batch_size], max_new_tokens=max_new_tokens,
                        batch_size=batch_size)
        for start in starts[state.process_index :: state.num_processes]
    }  # fmt: skip
    if state.num_processes > 1:
        mine = {start: batch for part in gather_object([mine]) for start, batch in part.items()}
    answers = [""] * len(texts)
    for i, answer in zip(order, (answer for start in starts for answer in mine[start])):
        answers[i] = answer
    lengths = [len(tokenizer(answer, add_special_tokens=False).input_ids) for answer in answers]
    return answers, sum(lengths) / max(len(lengths), 1)


def wins(first: list[float], second: list[float]) -> float:
    """Prompts where the first answer is judged better; a tie counts half."""
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(first, second))


def win_rate(first: list[float], second: list[float]) -> float:
    """Share of prompts where the first answer is judged better; ties count half."""
    return wins(first, second) / len(first)


def gold_judgements(prompts: list[dict[str, Any]], answers: dict[str, list[str]]) -> tuple[dict, dict]:
    """The world's gold reward of every answer, and each model's gold metrics."""
    from align.world import WorldPrompt, gold_reward
    from align.world.evaluation import score_answers

    world_prompts = [WorldPrompt.from_record(record) for record in prompts]
    judged = {name: [gold_reward(p, a) for p, a in zip(world_prompts, texts)] for name, texts in answers.items()}
    quality = {name: {k: v for k, v in score_answers(world_prompts, texts).items() if k != "prompts"}
               for name, texts in answers.items()}  # fmt: skip
    return judged, quality


def judge_judgements(
    prompts: list[dict[str, Any]], answers: dict[str, list[str]], judges: dict[str, Path]
) -> tuple[dict, dict]:
    """Held-out judges' gated reward of every answer (PIPELINE.md §7), and each model's violation rate on the
    safety prompts (the safety judge's score below the §7 threshold)."""
    tokenizer = load_tokenizer(judges["helpfulness"])
    helpful, safety = (AlignLlamaForSequenceClassification.from_pretrained(judges[t]).to(DEVICE)
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
    report = REWARD_MODEL_REPORT["evaluate_reward_model"](checkpoint, pairs, folder, title)
    return {f"{prefix}/{k}": v for k, v in report.items() if k.startswith("accuracy")}


def evaluate_round(
    n: int, checkpoints: dict[str, Path], folder: Path, setup: dict[str, Any], *, max_new_tokens: int = 32
) -> dict[str, Any]:
    """Metrics of round `n`'s policy (module docstring); writes `folder/{metrics.json, answers.jsonl,
    reward_model_*/}`, and in round 1 the SFT model's as round 0. Called on every process: the greedy answers
    are split over them, the judging is the main process's (the others return {})."""
    folder.mkdir(parents=True, exist_ok=True)
    prompts = setup["prompts"]
    answers, lengths = {}, {}
    for name in ("policy", "previous_policy", "sft"):
        answers[name], lengths[name] = greedy_answers(checkpoints[name], prompts, max_new_tokens, setup["batch_size"])
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
        "win_rate_vs_sft": win_rate(judged["policy"], judged["sft"]),
        "win_rate_vs_previous": win_rate(judged["policy"], judged["previous_policy"]),
        "judge": judge,
        "prompts": len(prompts),
    }
    for target in ("helpfulness", "safety"):
        metrics.update(reward_model_accuracy(checkpoints[target], setup["held_out"][target],
                                             folder / f"reward_model_{target}", f"round {n} {target} RM",
                                             f"{target}_rm"))  # fmt: skip
    atomic_write_jsonl(
        folder / "answers.jsonl",
        ({"id": p["id"], "policy": a, "judge": j} for p, a, j in zip(prompts, answers["policy"], judged["policy"])),
    )
    if n == 1:  # the SFT model's answers and metrics once, as round 0 of the report
        round_zero = folder.parent.parent / "round-0"
        atomic_write_jsonl(
            round_zero / "sft_answers.jsonl",
            ({"id": p["id"], "policy": a, "judge": j} for p, a, j in zip(prompts, answers["sft"], judged["sft"])),
        )
        sft_metrics = {"round": 0, **quality["sft"], "answer_length": lengths["sft"], "judge": judge}
        for target in ("helpfulness", "safety"):
            if f"base_{target}" in checkpoints:
                sft_metrics.update(reward_model_accuracy(checkpoints[f"base_{target}"], setup["held_out"][target],
                                                         round_zero / "evaluate" / f"reward_model_{target}",
                                                         f"base {target} RM", f"{target}_rm"))  # fmt: skip
        atomic_write_text(round_zero / "sft_metrics.json", json.dumps(sft_metrics, indent=2) + "\n")
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def elo_scores(judged: dict[int, list[float]], iterations: int = 200) -> dict[int, float]:
    """Elo-scale ratings (Bradley-Terry fitted by minorization-maximization) from per-prompt judgements of
    every pair of rounds; a tie counts half a win each. The first round is pinned at 1000."""
    rounds = sorted(judged)
    won = {(a, b): wins(judged[a], judged[b]) for a, b in itertools.permutations(rounds, 2)}
    strength = {r: 1.0 for r in rounds}
    for _ in range(iterations):
        for r in rounds:
            total_wins = sum(won[(r, o)] for o in rounds if o != r) + 0.5  # a half-win prior keeps it finite
            games = sum(len(judged[r]) / (strength[r] + strength[o]) for o in rounds if o != r) + 1 / strength[r]
            strength[r] = total_wins / games
    base = strength[rounds[0]]
    return {r: 1000 + 400 * math.log10(strength[r] / base) for r in rounds}


def write_report(run_dir: Path) -> Path:
    """`report.md` and `progress.png` of a run from its rounds' evaluations; returns the report path."""
    run_dir = Path(run_dir)
    rows = []
    for folder in sorted(run_dir.glob("round-*/evaluate"), key=lambda p: int(p.parent.name.split("-")[1])):
        if (folder / "metrics.json").is_file():
            rows.append(json.loads((folder / "metrics.json").read_text()))
    if not rows:
        raise FileNotFoundError(f"{run_dir}: no evaluated rounds (round-N/evaluate/metrics.json)")
    judged = {}
    sft_answers = run_dir / "round-0" / "sft_answers.jsonl"
    if sft_answers.is_file():
        judged[0] = [r["judge"] for r in read_jsonl(sft_answers)]
    for row in rows:
        judged[row["round"]] = [
            r["judge"] for r in read_jsonl(run_dir / f"round-{row['round']}" / "evaluate" / "answers.jsonl")
        ]
    elo = elo_scores(judged)
    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").is_file() else {}
    sft_metrics = run_dir / "round-0" / "sft_metrics.json"
    sft = json.loads(sft_metrics.read_text()) if sft_metrics.is_file() else None
    table_rows = ([sft] if sft and 0 in elo else []) + rows
    # Gold columns only where there is gold (the world); on real data the judges' measures alone.
    columns = [(key, header) for key, header in REPORT_COLUMNS if any(key in row for row in table_rows)]
    gold = rows[-1]["judge"] == "gold"
    lines = [
        f"# RLHF rounds: {run_dir.name}",
        "",
        f"Judge of win rates{'' if gold else ', violation rate'} and Elo: {rows[-1]['judge']}; "
        f"{rows[-1]['prompts']} held-out prompts, greedy answers. Reward-model accuracy: on the held-out pairs.",
        "",
        "| round | stages | " + " | ".join(header for _, header in columns) + " | Elo |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    labelled_by = []  # who labelled each round's comparison batch: people (their names) or AI feedback
    for number, stages in sorted(manifest.get("rounds", {}).items(), key=lambda item: int(item[0])):
        collect = stages.get("collect", {})
        if "annotated_by" in collect:
            unparsable = sum(collect.get("unparsable", {}).values())
            left_out = f" ({unparsable} unparsable answers, left out)" if unparsable else ""
            labelled_by.append(
                f"Round {number}'s comparisons labelled by {', '.join(collect['annotated_by'])}{left_out}."
            )
    lines[3:3] = ["", *labelled_by] if labelled_by else []
    for row in table_rows:
        number = row["round"]
        stages = [s for s in manifest.get("rounds", {}).get(str(number), {}) if s != "evaluate"]
        label = "0 (SFT)" if number == 0 else str(number)
        cells = " | ".join(_cell(row.get(key), ".1f" if key == "answer_length" else ".3f") for key, _ in columns)
        lines.append(f"| {label} | {', '.join(stages) or 'given checkpoints'} | {cells} | {elo[number]:.0f} |")
    lines += ["", "![progress](progress.png)", ""]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in ("gold_helpfulness", "violation_rate", "false_refusal_rate", "win_rate_vs_sft"):
        points = [(row["round"], row[name]) for row in table_rows if isinstance(row.get(name), (int, float))]
        if points:
            left.plot(*zip(*points), marker="o", label=name.replace("_", " "))
    left.set(xlabel="round", ylim=(0, 1), title="gold metrics" if gold else "held-out judges' metrics")
    left.legend(fontsize=8)
    right.plot(sorted(elo), [elo[r] for r in sorted(elo)], marker="o")
    right.set(xlabel="round (0 = SFT)", ylabel="Elo", title="Elo across rounds")
    figure.tight_layout()
    figure.savefig(run_dir / "progress.png", dpi=120)
    plt.close(figure)
    return report


REPORT_COLUMNS = (
    ("gold_helpfulness", "gold helpfulness"),
    ("violation_rate", "violation rate"),
    ("false_refusal_rate", "false refusals"),
    ("win_rate_vs_sft", "win vs SFT"),
    ("win_rate_vs_previous", "win vs previous"),
    ("helpfulness_rm/accuracy", "helpfulness RM acc"),
    ("safety_rm/accuracy", "safety RM acc"),
    ("answer_length", "answer tokens"),
)


def _cell(value: Any, spec: str) -> str:
    if isinstance(value, (int, float)):
        return "" if math.isnan(value) else format(value, spec)
    return "" if value is None else str(value)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    print(write_report(parser.parse_args().run_dir).read_text())
