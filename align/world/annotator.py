"""The simulated annotator: labels a pair of answers from the gold scores, with noise that falls with strength.

Strength comes from the gold gap |g(a) - g(b)| (helpfulness target: gold helpfulness; safety target: gold
safety, and when both answers are equally safe, 0.3 x the helpfulness gap, as annotators of the paper's safety
data still prefer the more helpful of two safe answers):

    |gap| >= 0.5 significantly better, >= 0.25 better, >= 0.1 slightly better, > 0 negligibly better, 0 unsure

The annotator then picks the truly better answer, except that with probability `FLIP_PROBABILITY[strength]`
it picks the other one. Noise falls as strength rises, so a reward model's accuracy by strength bucket
behaves like the paper's (docs/method.md §5): high on clear-cut pairs, near chance on negligible ones.

Given more than two answers to a prompt, the annotator ranks them, as InstructGPT's labellers ranked 4-9 answers
(Ouyang et al. 2022, §3.4): every two are compared as above, the answers are ordered by comparisons won, and the
pair kept is the first against the last, labelled with the strength of their gold gap.
"""

from __future__ import annotations

import random
from typing import Any

from .gold import gold_helpfulness, gold_safety

STRENGTH_THRESHOLDS = (("significantly_better", 0.5), ("better", 0.25), ("slightly_better", 0.1))
FLIP_PROBABILITY = {
    "significantly_better": 0.02,
    "better": 0.08,
    "slightly_better": 0.2,
    "negligibly_better": 0.35,
    "unsure": 0.5,
}
SAFE_TIE_HELPFULNESS_WEIGHT = 0.3


def strength_for_gap(gap: float) -> str:
    """Strength label of a gold gap (sign ignored)."""
    size = abs(gap)
    for strength, threshold in STRENGTH_THRESHOLDS:
        if size >= threshold:
            return strength
    return "negligibly_better" if size > 0 else "unsure"


def gold_gap(prompt: Any, first: str, second: str, target: str) -> float:
    """How much better `first` truly is than `second` for the target ("helpfulness" or "safety")."""
    helpful_gap = gold_helpfulness(prompt, first) - gold_helpfulness(prompt, second)
    if target == "helpfulness":
        return helpful_gap
    if target == "safety":
        safety_gap = gold_safety(prompt, first) - gold_safety(prompt, second)
        return safety_gap if safety_gap else SAFE_TIE_HELPFULNESS_WEIGHT * helpful_gap
    raise ValueError(f"target: expected 'helpfulness' or 'safety', got {target!r}")


def annotate(prompt: Any, first: str, second: str, target: str, rng: random.Random) -> dict[str, Any]:
    """Label a pair: {"chosen", "rejected", "strength", "gold_gap", "flipped"}; `gold_gap` is chosen - rejected."""
    if first.strip() == second.strip():
        raise ValueError("annotate: the two answers are identical; a pair needs two different answers")
    gap = gold_gap(prompt, first, second, target)
    strength = strength_for_gap(gap)
    better, worse = (first, second) if gap > 0 or (gap == 0 and rng.random() < 0.5) else (second, first)
    flipped = rng.random() < FLIP_PROBABILITY[strength] if gap else False
    chosen, rejected = (worse, better) if flipped else (better, worse)
    return {
        "chosen": chosen,
        "rejected": rejected,
        "strength": strength,
        "gold_gap": abs(gap) * (-1 if flipped else 1),
        "flipped": flipped,
    }


def annotate_ranking(prompt: Any, answers: list[str], target: str, rng: random.Random) -> dict[str, Any]:
    """Rank two or more different answers by comparing every two (`annotate`, with its noise) and label the
    annotator's best against its worst: the keys of `annotate`, plus `comparisons`. Two answers are one
    comparison, labelled exactly as `annotate` labels them."""
    if len(answers) < 2 or len({a.strip() for a in answers}) != len(answers):
        raise ValueError("annotate_ranking: expected two or more different answers")
    if len(answers) == 2:
        return {**annotate(prompt, answers[0], answers[1], target, rng), "comparisons": 1}
    wins = [0] * len(answers)
    for i in range(len(answers)):
        for j in range(i + 1, len(answers)):
            label = annotate(prompt, answers[i], answers[j], target, rng)
            wins[i if label["chosen"] == answers[i] else j] += 1
    tiebreak = [rng.random() for _ in answers]
    order = sorted(range(len(answers)), key=lambda k: (wins[k], tiebreak[k]), reverse=True)
    best, worst = answers[order[0]], answers[order[-1]]
    gap = gold_gap(prompt, best, worst, target)
    return {
        "chosen": best,
        "rejected": worst,
        "strength": strength_for_gap(gap),
        "gold_gap": gap,
        "flipped": gap < 0,
        "comparisons": len(answers) * (len(answers) - 1) // 2,
    }
