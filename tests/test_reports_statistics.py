"""The report's statistics (align/reports/statistics.py): Elo that stays finite for one-sided outcomes, 95%
intervals by bootstrap over prompts, win rates with intervals."""

import math
import random

import numpy as np
import pytest

from align.reports.rounds import elo_scores
from align.reports.statistics import (
    bradley_terry_strengths,
    elo_with_intervals,
    pairwise_wins,
    win_rate_with_interval,
)


def test_a_round_that_wins_every_comparison_gets_a_finite_sensible_elo():
    """The report once showed 24,847 for 13 prompts all won: the fit diverged."""
    elo = elo_scores({0: [0.1] * 13, 1: [0.9] * 13})
    assert elo[0] == 1000 and math.isfinite(elo[1]) and 1000 < elo[1] < 1000 + 800
    rated = elo_with_intervals({0: [0.1] * 13, 1: [0.9] * 12 + [0.05]})  # 12 of 13 won
    rating, low, high = rated[1]
    assert 1000 < low < rating < high < 1000 + 800


def test_with_many_prompts_the_prior_is_negligible_and_ratings_match_the_likelihood():
    wins = np.array([[0.0, 60.0], [140.0, 0.0]])  # 140 of 200 won
    strengths = bradley_terry_strengths(wins, 200)
    assert 400 * math.log10(strengths[1] / strengths[0]) == pytest.approx(400 * math.log10(140 / 60), abs=2)


def test_identical_rounds_get_the_same_rating_and_overlapping_intervals():
    rng = random.Random(0)
    sft, better = [rng.random() for _ in range(40)], None
    better = [score + 0.1 for score in sft]
    rated = elo_with_intervals({0: sft, 1: better, 2: list(better)})
    assert rated[1] == pytest.approx(rated[2])
    assert rated[1][1] <= rated[2][2] and rated[2][1] <= rated[1][2]


def test_win_rates_carry_an_interval_that_covers_half_only_when_the_evaluation_cannot_tell():
    rng = random.Random(1)
    first, second = [rng.random() for _ in range(200)], [rng.random() for _ in range(200)]
    rate, low, high = win_rate_with_interval(first, second)
    assert low < 0.5 < high and low < rate < high and high - low < 0.2
    rate, low, high = win_rate_with_interval([1.0] * 180 + [0.0] * 20, [0.5] * 200)
    assert rate == 0.9 and 0.5 < low < 0.9 < high
    assert win_rate_with_interval([0.5, 0.5], [0.5, 0.5])[0] == 0.5  # ties count half


def test_pairwise_wins_count_ties_half():
    wins = pairwise_wins(np.array([[1.0, 0.5, 0.2], [1.0, 0.7, 0.1]]))
    assert wins.tolist() == [[0.0, 1.5], [1.5, 0.0]]
