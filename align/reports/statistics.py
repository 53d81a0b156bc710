"""The report's statistics: Elo ratings from a Bradley-Terry fit that stays finite, win rates, and 95% intervals
for both by bootstrap over the held-out prompts (the paper reports its human-evaluation win rates with 95%
confidence intervals, Llama 2 §3.4.2 / Fig. 12).

Every round's policy answers the same held-out prompts, and a judge scores each answer; two rounds "play" one game
per prompt, won by the higher score (a tie is half a win each). The ratings are the maximum a posteriori
Bradley-Terry strengths with a weak prior: each round also plays `PRIOR_GAMES` virtual games against a reference
player of strength 1 and wins half of them. Without it a round that wins every comparison has an infinite
rating (the maximum-likelihood fit diverges); with it, 13 prompts all won give about +517 Elo, and with hundreds of
prompts the prior's pull is negligible (140 of 200 won: +146 against the likelihood's +147). Ratings are on the Elo
scale, the first round (the SFT model) pinned at 1000.

Intervals: the prompts are resampled with replacement (`BOOTSTRAP_SAMPLES` times, a fixed seed, so a report is
reproducible), the statistic recomputed on each resample, and the 2.5th and 97.5th percentiles taken. A difference
whose interval covers zero (a win rate's covers 0.5) is not one the evaluation can tell from chance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PRIOR_GAMES = 2.0  # virtual games of every round against a reference of strength 1, half of them won
BOOTSTRAP_SAMPLES = 1000
LEVEL = 0.95


def pairwise_wins(judgements: np.ndarray) -> np.ndarray:
    """`wins[i, j]`: the prompts where round i's answer is judged better than round j's (ties half), from
    `judgements[round, prompt]`."""
    first, second = judgements[:, None, :], judgements[None, :, :]
    return (first > second).sum(-1) + 0.5 * (first == second).sum(-1) * (1 - np.eye(len(judgements)))


def bradley_terry_strengths(wins: np.ndarray, games: int, prior_games: float = PRIOR_GAMES) -> np.ndarray:
    """MAP Bradley-Terry strengths (module docstring), by Newton's method on the log-strengths: the log-posterior
    is strictly concave (the prior makes it so), so a few damped Newton steps reach its unique maximum."""
    played = games * (1 - np.eye(len(wins)))
    won, rounds = wins.sum(1), len(wins)

    def log_posterior(theta: np.ndarray) -> float:
        difference = theta[:, None] - theta[None, :]
        likelihood = (wins * -np.logaddexp(0, -difference)).sum()
        return float(likelihood + (prior_games / 2 * theta - prior_games * np.logaddexp(0, theta)).sum())

    theta = np.zeros(rounds)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(theta[:, None] - theta[None, :])))  # p[i, j]: chance that i beats j
        q = 1 / (1 + np.exp(-theta))  # against the prior's reference
        gradient = won - (played * p).sum(1) + prior_games / 2 - prior_games * q
        curvature = played * p * (1 - p)
        hessian = curvature - np.diag(curvature.sum(1) + prior_games * q * (1 - q))
        step = np.linalg.solve(hessian, -gradient)
        size, current = 1.0, log_posterior(theta)
        while log_posterior(theta + size * step) < current - 1e-12 and size > 1e-6:
            size /= 2
        theta = theta + size * step
        if np.max(np.abs(size * step)) < 1e-9:
            break
    return np.exp(theta)


def elo_from_judgements(judgements: np.ndarray) -> np.ndarray:
    """Elo ratings of the rounds (rows of `judgements[round, prompt]`), the first pinned at 1000."""
    strengths = bradley_terry_strengths(pairwise_wins(judgements), judgements.shape[1])
    return 1000 + 400 * np.log10(strengths / strengths[0])


def bootstrap_interval(
    statistic: Callable[[np.ndarray], np.ndarray], judgements: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The `LEVEL` percentile interval of `statistic(judgements)` over resamples of the prompts (the columns)."""
    rng = np.random.default_rng(seed)
    prompts = judgements.shape[1]
    samples = np.stack(
        [statistic(judgements[:, rng.integers(0, prompts, prompts)]) for _ in range(BOOTSTRAP_SAMPLES)]
    )
    tail = 100 * (1 - LEVEL) / 2
    return np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)


def elo_with_intervals(judged: dict[int, Sequence[float]]) -> dict[int, tuple[float, float, float]]:
    """Round -> (Elo, low, high) from each round's per-prompt judgements (the same prompts, in the same order)."""
    rounds = sorted(judged)
    judgements = np.array([list(judged[r]) for r in rounds], dtype=float)
    ratings = elo_from_judgements(judgements)
    low, high = bootstrap_interval(elo_from_judgements, judgements)
    return {r: (float(ratings[i]), float(low[i]), float(high[i])) for i, r in enumerate(rounds)}


def mean_with_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(the mean of per-prompt values, and its bootstrap interval)."""
    values = np.asarray(values, dtype=float)
    low, high = bootstrap_interval(lambda sample: sample.mean(1), values[None, :])
    return float(values.mean()), float(low[0]), float(high[0])


def win_rate_with_interval(first: Sequence[float], second: Sequence[float]) -> tuple[float, float, float]:
    """(share of prompts where `first` is judged better, ties half; and its bootstrap interval)."""
    return mean_with_interval([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(first, second)])
