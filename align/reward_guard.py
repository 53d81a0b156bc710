"""Watching PPO for reward hacking: the adaptive KL controller and the guard's alarm.

- `AdaptiveKLController` (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", §2.2):
  the KL coefficient follows the KL it produces toward a target,
  beta <- beta * (1 + K_beta * e), e = clip(KL / KL_target - 1, -0.2, 0.2), K_beta = episodes / horizon,
  instead of staying at a fixed `kl_coef`.
- `RewardHackingGuard`: over a window of iterations, the reward PPO optimises rising while a held-out judge
  falls (a reward source with weight 0, or the world's gold scorer), or the KL per sequence passing a bound,
  is an alarm: the policy is being fitted to the reward models' mistakes rather than to what they stand for.
  The trend of each series is the slope of its least-squares line over the window. The judge's mean over the
  same window is what `guard_keep_best` ranks iterations by: one iteration's batch is too noisy to pick a
  policy on (on the demo, single iterations' gold swings by +-0.1 around a trend of a few hundredths).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class AdaptiveKLController:
    """The KL coefficient of Ziegler et al. (2019), adjusted after each iteration toward `target` KL."""

    def __init__(self, kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL: target and horizon must be positive, got {target}, {horizon}")
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, kl: float, episodes: int) -> float:
        """The coefficient after an iteration of `episodes` sequences whose mean KL was `kl`."""
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * episodes / self.horizon
        return self.value


def slope(values: Sequence[float]) -> float:
    """The slope of the least-squares line through (0, v0), (1, v1), ..."""
    count = len(values)
    mean_x, mean_y = (count - 1) / 2, sum(values) / count
    spread = sum((x - mean_x) ** 2 for x in range(count))
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / spread if spread else 0.0


class RewardHackingGuard:
    """Fires when, over the last `window` iterations, the optimised reward rose while the held-out judge fell,
    or when the KL per sequence passes `max_kl` (module docstring). `observe` takes one iteration's values and
    returns why the alarm fires, or None."""

    def __init__(self, window: int = 10, max_kl: float | None = None) -> None:
        if window < 2:
            raise ValueError(f"guard_window: at least 2 iterations to see a trend, got {window}")
        self.window, self.max_kl = window, max_kl
        self.history: deque[tuple[float, float]] = deque(maxlen=window)

    def observe(self, reward: float, judge: float | None, kl: float) -> str | None:
        if self.max_kl is not None and kl > self.max_kl:
            return f"KL {kl:.3f} above guard_max_kl {self.max_kl}"
        if judge is None:
            return None
        self.history.append((reward, judge))
        if len(self.history) < self.window:
            return None
        reward_trend, judge_trend = slope([r for r, _ in self.history]), slope([j for _, j in self.history])
        if reward_trend > 0 > judge_trend:
            return (
                f"over the last {self.window} iterations the optimised reward rose ({reward_trend:+.4f} per "
                f"iteration) while the held-out judge fell ({judge_trend:+.4f})"
            )
        return None

    def judge_mean(self) -> float | None:
        """The held-out judge's mean over the last `window` iterations, None until there are that many."""
        if len(self.history) < self.window:
            return None
        return sum(judge for _, judge in self.history) / self.window

    def state(self) -> list[list[float]]:
        """What a checkpoint keeps, so a resumed run judges the same window."""
        return [list(pair) for pair in self.history]

    def load_state(self, history: Sequence[Sequence[float]]) -> None:
        self.history.extend((float(r), float(j)) for r, j in history)
