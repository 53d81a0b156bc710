"""Plot the metrics.jsonl of one or more runs (loss, learning rate, grad norm, any logged key) to a PNG.

python eval/plot_metrics.py runs/pretrain/world_small runs/sft/world_small --keys loss learning_rate --out curves.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from align.tracking import METRICS_FILE, read_metrics  # noqa: E402


def plot(runs: list[Path], keys: list[str], out: Path) -> Path:
    """One panel per key, one line per run; returns the PNG path."""
    figure, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for run in runs:
        records = read_metrics(run / METRICS_FILE)
        if not records:
            raise FileNotFoundError(f"plot_metrics: no metrics at {run / METRICS_FILE}")
        for axis, key in zip(axes[0], keys):
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                axis.plot(*zip(*points), label=run.name if run.name != "final" else run.parent.name)
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
    args = parser.parse_args(argv)
    try:
        print(plot(args.runs, args.keys, args.out))
    except FileNotFoundError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
