"""Evaluation after each RLHF round and the report of a run of rounds (used by recipes/rlhf_round.py).

    python eval/rounds_report.py runs/demo            # rebuild runs/demo/report.md and progress.png

`evaluate_round` answers held-out prompts greedily with the round's policy, the previous round's and the SFT
model, and measures: gold helpfulness, safety violation rate and false-refusal rate (the world's gold scorers),
reward-model accuracy by preference strength on held-out pairs, and the win rate of the round against SFT and
against the previous round. Judge: the world's gold reward (`align.world.gold_reward`) on world prompts; on
a user's prompts (no gold), the round's reward models (gated reward, PIPELINE.md §7). A tie counts half.

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

from align.data import load_tokenizer  # noqa: E402
from align.io import atomic_write_jsonl, atomic_write_text, read_jsonl  # noqa: E402
from align.modeling import AlignLlamaForCausalLM, AlignLlamaForSequenceClassification  # noqa: E402
from align.reward_model import held_out_pairs  # noqa: E402
from align.rewards import gated_reward, score  # noqa: E402
from align.world import World, WorldPrompt, gold_reward  # noqa: E402
from align.world.evaluation import evaluate_policy, score_answers  # noqa: E402

REWARD_MODEL_REPORT = runpy.run_path(str(Path(__file__).resolve().parent / "reward_model_report.py"))
COLUMNS = ("gold_helpfulness", "violation_rate", "false_refusal_rate", "win_rate_vs_sft", "win_rate_vs_previous")


def greedy_answers(model_dir: Path, prompts: list[WorldPrompt], max_new_tokens: int) -> list[str]:
    model = AlignLlamaForCausalLM.from_pretrained(model_dir).to("cuda" if torch.cuda.is_available() else "cpu")
    return evaluate_policy(model, load_tokenizer(model_dir), prompts, max_new_tokens, batch_size=64)[1]


def wins(first: list[float], second: list[float]) -> float:
    """Prompts where the first answer is judged better; a tie counts half."""
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(first, second))


def win_rate(first: list[float], second: list[float]) -> float:
    """Share of prompts where the first answer is judged better; ties count half."""
    return wins(first, second) / len(first)


def evaluate_round(
    n: int, checkpoints: dict[str, Path], folder: Path, *, prompts: int = 200, world_seed: int = 0,
    max_new_tokens: int = 32, gold: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Metrics of round `n`'s policy; writes `folder/{metrics.json, answers.jsonl, reward_models/}`."""
    folder.mkdir(parents=True, exist_ok=True)
    test_prompts = World(seed=world_seed).prompts(prompts, "test")
    answers = {name: greedy_answers(checkpoints[name], test_prompts, max_new_tokens)
               for name in ("policy", "previous_policy", "sft")}  # fmt: skip
    if gold:
        judge = {name: [gold_reward(p, a) for p, a in zip(test_prompts, texts)] for name, texts in answers.items()}
    else:
        tokenizer = load_tokenizer(checkpoints["policy"])
        helpful, safety = (
            AlignLlamaForSequenceClassification.from_pretrained(checkpoints[t]) for t in ("helpfulness", "safety")
        )
        is_safety = torch.tensor([p.is_safety for p in test_prompts])
        messages = [p.messages for p in test_prompts]
        judge = {
            name: gated_reward(score(safety, tokenizer, messages, texts).sigmoid,
                               score(helpful, tokenizer, messages, texts).sigmoid, is_safety).tolist()
            for name, texts in answers.items()
        }  # fmt: skip
    metrics = {
        "round": n,
        **{k: v for k, v in score_answers(test_prompts, answers["policy"]).items() if k != "prompts"},
        "win_rate_vs_sft": win_rate(judge["policy"], judge["sft"]),
        "win_rate_vs_previous": win_rate(judge["policy"], judge["previous_policy"]),
        "judge": "gold" if gold else "reward models",
        "prompts": prompts,
    }
    pairs = held_out_pairs(world_seed=world_seed)
    for target in ("helpfulness", "safety"):
        report = REWARD_MODEL_REPORT["evaluate_reward_model"](
            checkpoints[target], pairs, folder / f"reward_model_{target}", f"round {n} {target} RM"
        )
        metrics.update({f"{target}_rm/{k}": v for k, v in report.items() if k.startswith("accuracy")})
    atomic_write_jsonl(
        folder / "answers.jsonl",
        ({"id": p.id, "policy": a, "judge": j} for p, a, j in zip(test_prompts, answers["policy"], judge["policy"])),
    )
    if n == 1:  # the SFT model's answers and gold metrics once, as round 0 of the report
        round_zero = folder.parent.parent / "round-0"
        atomic_write_jsonl(
            round_zero / "sft_answers.jsonl",
            ({"id": p.id, "policy": a, "judge": j} for p, a, j in zip(test_prompts, answers["sft"], judge["sft"])),
        )
        if gold:
            sft_metrics = {"round": 0, **score_answers(test_prompts, answers["sft"])}
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
    lines = [
        f"# RLHF rounds: {run_dir.name}",
        "",
        f"Judge of win rates and Elo: {rows[-1]['judge']}; {rows[-1]['prompts']} held-out prompts, greedy answers.",
        "",
        "| round | stages | gold helpfulness | violation rate | false refusals | win vs SFT | win vs previous "
        "| helpfulness RM acc | safety RM acc | Elo |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sft_metrics = run_dir / "round-0" / "sft_metrics.json"
    sft = json.loads(sft_metrics.read_text()) if sft_metrics.is_file() else None
    if 0 in elo:
        round_zero = ", ".join(manifest.get("rounds", {}).get("0", {})) or "given checkpoints"
        gold_columns = (
            f"{sft['gold_helpfulness']:.3f} | {sft['violation_rate']:.3f} | {sft['false_refusal_rate']:.3f}"
            if sft
            else " | | "
        )
        lines.append(f"| 0 (SFT) | {round_zero} | {gold_columns} | | | | | {elo[0]:.0f} |")
    for row in rows:
        stages = ", ".join(s for s in manifest.get("rounds", {}).get(str(row["round"]), {}) if s != "evaluate")
        lines.append(
            f"| {row['round']} | {stages} | {row['gold_helpfulness']:.3f} | {row['violation_rate']:.3f} | "
            f"{row['false_refusal_rate']:.3f} | {row['win_rate_vs_sft']:.3f} | {row['win_rate_vs_previous']:.3f} | "
            f"{row.get('helpfulness_rm/accuracy', float('nan')):.3f} | "
            f"{row.get('safety_rm/accuracy', float('nan')):.3f} "
            f"| {elo[row['round']]:.0f} |"
        )
    lines += ["", "![progress](progress.png)", ""]
    report = run_dir / "report.md"
    atomic_write_text(report, "\n".join(lines))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    plotted = ([sft] if sft else []) + rows
    for name in ("gold_helpfulness", "violation_rate", "false_refusal_rate"):
        left.plot([row["round"] for row in plotted], [row[name] for row in plotted], marker="o", label=name)
    left.plot([row["round"] for row in rows], [row["win_rate_vs_sft"] for row in rows], marker="o", label="win vs SFT")
    left.set(xlabel="round", ylim=(0, 1), title="gold metrics")
    left.legend(fontsize=8)
    right.plot(sorted(elo), [elo[r] for r in sorted(elo)], marker="o")
    right.set(xlabel="round (0 = SFT)", ylabel="Elo", title="Elo across rounds")
    figure.tight_layout()
    figure.savefig(run_dir / "progress.png", dpi=120)
    plt.close(figure)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    print(write_report(parser.parse_args().run_dir).read_text())
