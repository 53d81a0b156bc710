"""Pairwise accuracy of a reward model, overall and per preference-strength bucket (Llama 2 paper, Table 8).

A local `evaluate` metric: `evaluate.load("align/reports/metrics/pairwise_accuracy")`, no Hub needed.
predictions: reward(chosen) - reward(rejected) per pair; references: the pair's strength label.
A pair counts as right when the chosen answer scores strictly higher. `accuracy/decided` leaves out pairs
labelled "unsure" (their label is a coin flip, so no model can beat 50% on them).
"""

import datasets
import evaluate

STRENGTHS = ["significantly_better", "better", "slightly_better", "negligibly_better", "unsure"]


class PairwiseAccuracy(evaluate.Metric):
    """Accuracy of reward differences, with `accuracy/<strength>` and `count/<strength>` per bucket."""

    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Touvron et al. 2023, Llama 2: Open Foundation and Fine-Tuned Chat Models, Table 8.",
            inputs_description="predictions: float reward differences; references: strength labels",
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        right = [difference > 0 for difference in predictions]
        result = {"accuracy": sum(right) / len(right) if right else float("nan"), "count": len(right)}
        decided = [r for r, label in zip(right, references) if label != "unsure"]
        result["accuracy/decided"] = sum(decided) / len(decided) if decided else float("nan")
        for strength in STRENGTHS:
            bucket = [r for r, label in zip(right, references) if label == strength]
            result[f"count/{strength}"] = len(bucket)
            result[f"accuracy/{strength}"] = sum(bucket) / len(bucket) if bucket else float("nan")
        return result
