"""The synthetic world: an embedded default where every stage's gain is a measured number on a CPU.

See `World` and data/README.md for the rules; `gold_helpfulness` / `gold_safety` are the true rewards.
"""

from .annotator import FLIP_PROBABILITY, annotate, annotate_ranking, gold_gap, strength_for_gap
from .gold import (
    gold_helpfulness,
    gold_reward,
    gold_safety,
    has_harmful_instructions,
    is_false_refusal,
    is_refusal,
    is_violation,
)
from .tasks import KINDS, QUALITIES, WorldPrompt
from .world import TARGET_PROMPT_MIX, World

__all__ = [
    "FLIP_PROBABILITY",
    "KINDS",
    "QUALITIES",
    "TARGET_PROMPT_MIX",
    "World",
    "WorldPrompt",
    "annotate",
    "annotate_ranking",
    "gold_gap",
    "gold_helpfulness",
    "gold_reward",
    "gold_safety",
    "has_harmful_instructions",
    "is_false_refusal",
    "is_refusal",
    "is_violation",
    "strength_for_gap",
]
