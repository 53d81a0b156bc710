"""eval/experiments/rm_contrasts.py: what a helpfulness reward model can tell apart, one controlled flaw at a time."""

import re
import runpy
from pathlib import Path

from align.world import World
from align.world.gold import gold_helpfulness, is_all_caps

RM_CONTRASTS = runpy.run_path(str(Path(__file__).resolve().parents[1] / "eval" / "experiments" / "rm_contrasts.py"))


def pairs_of(world_seed: int = 0, count: int = 400):
    world = World(seed=world_seed)
    return RM_CONTRASTS["contrast_pairs"](world, world.prompts(count, "test", seed=1))


def test_the_gold_scorers_prefer_the_right_answer_in_every_contrast():
    accuracy = RM_CONTRASTS["contrast_accuracy"](
        lambda prompts, answers: [gold_helpfulness(p, a) for p, a in zip(prompts, answers)], pairs_of()
    )
    assert {"refusal", "off_topic", "near:arithmetic", "near:fact", "format:caps"} <= set(accuracy)
    assert all(row["accuracy"] == 1.0 and row["pairs"] > 0 for row in accuracy.values()), accuracy
    assert sum(row["pairs"] for row in accuracy.values()) > 2.5 * accuracy["refusal"]["pairs"]  # several per prompt


def test_a_scorer_that_checks_only_the_sum_tells_apart_only_the_arithmetic_near_misses():
    def last_number_is_the_sum(prompts, answers):
        return [
            float(p.key["task"] == "arithmetic" and re.findall(r"-?\d+", a)[-1:] == [str(p.key["answer"])])
            for p, a in zip(prompts, answers)
        ]

    accuracy = RM_CONTRASTS["contrast_accuracy"](last_number_is_the_sum, pairs_of())
    assert accuracy["near:arithmetic"]["accuracy"] == 1.0
    assert accuracy["near:fact"]["accuracy"] == 0.5  # a tie every time


def test_a_scorer_that_dislikes_capitals_is_wrong_on_the_caps_format():
    accuracy = RM_CONTRASTS["contrast_accuracy"](lambda prompts, answers: [-float(is_all_caps(a)) for a in answers],
                                                 pairs_of())  # fmt: skip
    assert accuracy["format:caps"]["accuracy"] == 0.0
    assert accuracy["refusal"]["accuracy"] == 0.5
