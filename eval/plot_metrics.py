"""Plot the metrics.jsonl of one or more runs (loss, learning rate, grad norm, any logged key) to a PNG.

python eval/plot_metrics.py runs/pretrain/world_small runs/sft/world_small --keys loss learning_rate --out curves.png
python eval/plot_metrics.py runs/ppo/mine --keys objective/scores objective/gold objective/kl --mark guard/alarm --smooth 10

`--mark KEY` shades the steps where KEY is non-zero in every panel (e.g. PPO's reward-hacking alarm);
`--smooth N` draws the mean of the last N points over each (faint) curve, for noisy per-iteration metrics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from align.config import exit_with_error  # noqa: E402
from align.tracking import METRICS_FILE, read_metrics  # noqa: E402


def marked_steps(records: list[dict], key: str) -> list[int]:
    """The steps where `key` was logged non-zero (a PPO iteration whose reward-hacking alarm fired)."""
    return [record["step"] for record in records if record.get(key)]


def trailing_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and the `window - 1` before it (fewer at the start)."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def plot(runs: list[Path], keys: list[str], out: Path, mark: str | None = None, smooth: int = 1) -> Path:
    """One panel per key, one line per run (with its trailing mean over `smooth` points when above 1), the
    steps where `mark` is non-zero shaded; returns the PNG path."""
    figure, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for run in runs:
        records = read_metrics(run / METRICS_FILE)
        if not records:
            raise FileNotFoundError(f"no metrics at {run / METRICS_FILE}")
        marked = marked_steps(records, mark) if mark else []
        for axis, key in zip(axes[0], keys):
            points = [(r["step"], r[key]) for r in records if key in r]
            label = run.name if run.name != "final" else run.parent.name
            if points and smooth > 1:
                steps, values = zip(*points)
                line = axis.plot(steps, values, alpha=0.3, linewidth=0.8)[0]
                axis.plot(steps, trailing_mean(list(values), smooth), color=line.get_color(),
                          label=f"{label} (mean of {smooth})")  # fmt: skip
            elif points:
                axis.plot(*zip(*points), label=label)
            for number, step in enumerate(marked):
                axis.axvspan(step - 0.5, step + 0.5, color="tab:red", alpha=0.15, linewidth=0,
                             label=mark if not number else None)  # fmt: skip
            axis.set_title(key)
            axis.set_xlabel("step")
    for axis in axes[0]:
        axis.legend(fontsize=7)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding metrics.jsonl")
    parser.add_argument("--keys", nargs="+", default=["loss", "learning_rate", "grad_norm"])
    parser.add_argument("--out", type=Path, default=Path("metrics.png"))
    parser.add_argument("--mark", help="shade the steps where this key is non-zero (e.g. guard/alarm)")
    parser.add_argument("--smooth", type=int, default=1, help="also draw the trailing mean over this many points")
    args = parser.parse_args(argv)
    try:
        if args.smooth < 1:
            raise ValueError(f"--smooth: expected at least 1, got {args.smooth}")
        print(plot(args.runs, args.keys, args.out, args.mark, args.smooth))
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(str(error), "plot_metrics")


if __name__ == "__main__":
    main()
