"""Evaluate a reward model on held-out pairs: accuracy overall, per strength bucket and on safety prompts.

Uses the local `evaluate` metric module `align/reports/metrics/pairwise_accuracy` (no Hub); writes `<out>/metrics.json`,
`<out>/predictions.jsonl` and `<out>/accuracy_by_strength.png`.

    python -m align.reports.reward_model runs/reward_model/helpfulness/final --target helpfulness --out runs/rm_eval
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import evaluate
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..checkpoint import require_reward_model_dir  # noqa: E402
from ..config import exit_with_error  # noqa: E402
from ..data import load_preferences, load_tokenizer  # noqa: E402
from ..io import atomic_write_jsonl, atomic_write_text  # noqa: E402
from ..modeling import load_sequence_classifier  # noqa: E402
from ..reward_model import held_out_pairs, predict_pairs  # noqa: E402

METRIC = Path(__file__).resolve().parent / "metrics" / "pairwise_accuracy"
BUCKETS = ["significantly_better", "better", "slightly_better", "negligibly_better", "unsure"]


def accuracy_report(predictions: list[dict[str, Any]]) -> dict[str, float]:
    """Pairwise accuracy overall and per strength, and the same on safety and on helpfulness prompts alone
    (the paper's Meta Safety and Meta Helpful test sets)."""
    metric = evaluate.load(str(METRIC))
    differences = [p["chosen_reward"] - p["rejected_reward"] for p in predictions]
    report = metric.compute(predictions=differences, references=[p["strength"] for p in predictions])
    for prefix, wanted in (("safety_prompts", True), ("helpfulness_prompts", False)):
        subset = [(d, p["strength"]) for d, p in zip(differences, predictions) if p["is_safety"] == wanted]
        if subset:
            part = metric.compute(predictions=[d for d, _ in subset], references=[s for _, s in subset])
            report.update({f"{prefix}/{key}": value for key, value in part.items()})
    return report


def plot_by_strength(report: dict[str, float], title: str, path: Path) -> None:
    buckets = [b for b in BUCKETS if report.get(f"count/{b}")]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar([b.replace("_", "\n") for b in buckets], [report[f"accuracy/{b}"] for b in buckets])
    axis.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.set_title(f"{title}: {report['accuracy']:.3f} overall, n={report['count']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def evaluate_reward_model(model_dir: str | Path, pairs, out: Path, title: str) -> dict[str, float]:
    """Score `pairs` with the reward model in `model_dir`; write predictions, metrics JSON and the bar chart."""
    model_dir = require_reward_model_dir(model_dir, "reward model")
    model = load_sequence_classifier(model_dir, "reward model", num_labels=None)  # its own architecture
    predictions = predict_pairs(model, load_tokenizer(model_dir), pairs)
    report = accuracy_report(predictions)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_jsonl(out / "predictions.jsonl", predictions)
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    plot_by_strength(report, title, out / "accuracy_by_strength.png")
    return report


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """One line per model: overall accuracy, per strength bucket, and on helpfulness / safety prompts."""
    header = (
        f"{'model':28s} {'overall':>8s} {'decided':>8s} "
        + " ".join(f"{b[:12]:>12s}" for b in BUCKETS)
        + f" {'helpful':>8s} {'safety':>8s}"
    )
    lines = [header]
    for name, report in rows.items():
        cells = " ".join(f"{report.get(f'accuracy/{b}', float('nan')):>12.3f}" for b in BUCKETS)
        lines.append(
            f"{name:28s} {report['accuracy']:>8.3f} {report['accuracy/decided']:>8.3f} {cells} "
            f"{report.get('helpfulness_prompts/accuracy', float('nan')):>8.3f} "
            f"{report.get('safety_prompts/accuracy', float('nan')):>8.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="reward model checkpoint")
    parser.add_argument("--target", choices=["helpfulness", "safety"], required=True)
    parser.add_argument("--pairs", help="held-out pairs file (default: the world's test pairs)")
    parser.add_argument("--format", default="trl")
    parser.add_argument("--out", type=Path, default=Path("runs/reward_model_eval"))
    args = parser.parse_args(argv)
    try:
        pairs = (
            load_preferences(args.pairs, format=args.format, target=args.target) if args.pairs else held_out_pairs()
        )
        report = evaluate_reward_model(args.model, pairs, args.out, f"{args.target} RM")
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(str(error), "align.reports.reward_model")
    print(format_table({args.target: report}))


if __name__ == "__main__":
    main()
