"""What a round's helpfulness reward model rewards among the candidates rejection sampling scored (demo world).

    python eval/experiments/rm_signal.py runs/demo/round-{1,2,3}/rejection_sampling/kept.jsonl [--answers_only]

For each world helpfulness prompt of `kept.jsonl` (its K candidates, their helpfulness-RM scores and the prompt's
answer key), the candidates' gold helpfulness and length in words, centred per prompt, then per kind of prompt:
the correlation of the RM's score with gold, with length, and with refusing; and the gold of the RM's pick, of
one candidate on average and of the gold-best one. `--answers_only` drops the refusals (the world's
`is_refusal`, as its false-refusal rate counts them) first: what the reward model
rewards among the policy's answers. A diagnostic of eval/experiments/rounds_compound.md (ninth session).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from align.world.gold import gold_helpfulness, is_refusal
from align.world.tasks import WorldPrompt


def correlation(x: list[float], y: list[float]) -> float:
    """Pearson's r (nan when either side is constant)."""
    try:
        return statistics.correlation(x, y)
    except statistics.StatisticsError:
        return float("nan")


def centred(values: list[float]) -> list[float]:
    mean = statistics.fmean(values)
    return [v - mean for v in values]


def rm_signal(path: Path, answers_only: bool = False) -> dict[str, dict[str, float]]:
    """Per kind of prompt: correlations of the RM's score (with gold, length, refusing) and the gold of the RM's
    pick, of the mean candidate and of the best."""
    by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["is_safety"]:
            continue
        candidates, scores = record["candidates"], record["helpfulness_scores"]
        if answers_only:
            kept = [i for i, text in enumerate(candidates) if not is_refusal(text)]
            candidates, scores = [candidates[i] for i in kept], [scores[i] for i in kept]
        prompt = WorldPrompt.from_record(record)
        golds = [gold_helpfulness(prompt, text) for text in candidates]
        if len(set(golds)) < 2:  # nothing to tell apart
            continue
        refusals = [float(is_refusal(text)) for text in candidates]
        sums = by_kind[record["kind"]]
        sums["score"] += centred(scores)
        sums["gold"] += centred(golds)
        sums["length"] += centred([float(len(text.split())) for text in candidates])
        sums["refusal"] += centred(refusals)
        sums["picked"].append(golds[max(range(len(scores)), key=scores.__getitem__)])
        sums["mean"].append(statistics.fmean(golds))
        sums["oracle"].append(max(golds))
    return {
        kind: {
            "prompts": len(sums["picked"]),
            "r_gold": correlation(sums["score"], sums["gold"]),
            "r_length": correlation(sums["score"], sums["length"]),
            "r_refusal": correlation(sums["score"], sums["refusal"]),
            "picked_gold": statistics.fmean(sums["picked"]),
            "mean_gold": statistics.fmean(sums["mean"]),
            "oracle_gold": statistics.fmean(sums["oracle"]),
        }
        for kind, sums in sorted(by_kind.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kept", nargs="+", type=Path, help="rejection sampling's kept.jsonl, one per round")
    parser.add_argument("--answers_only", action="store_true", help="leave the refusals out")
    args = parser.parse_args()
    for path in args.kept:
        print(path)
        for kind, row in rm_signal(path, args.answers_only).items():
            print(f"  {kind:10s} prompts {row['prompts']:3d}  r(RM, gold) {row['r_gold']:+.2f}  "
                  f"r(RM, length) {row['r_length']:+.2f}  r(RM, refusing) {row['r_refusal']:+.2f}  "
                  f"gold: RM's pick {row['picked_gold']:.3f}, mean {row['mean_gold']:.3f}, "
                  f"best {row['oracle_gold']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
