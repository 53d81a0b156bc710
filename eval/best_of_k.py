"""Best-of-K against K and temperature on the world's held-out prompts, judged by the reward models and by gold.

    python eval/best_of_k.py --policy runs/sft/world_small/final \\
        --helpfulness_rm runs/reward_model/world_small_helpfulness/final \\
        --safety_rm runs/reward_model/world_small_safety/final --prompts 100 --k 16 --temperatures 0.7,1.0,1.3

For each temperature, `align.rejection_sampling.best_of_k` samples K answers per prompt and scores them with the
reward spec (`--reward`; by default the gated reward of docs/method.md §7 over `--helpfulness_rm` / `--safety_rm`). Printed and written to `<out>/best_of_k_eval.{json,png}`, per temperature and k:
- the gated reward of the best and of the median of the first k samples (the paper's Figure 7);
- the gold helpfulness of the answer best-of-k keeps (helpfulness prompts) and its violation rate (safety
  prompts): what the reward models' picks are truly worth;
- the oracle: the best gold helpfulness among the first k (what a perfect reward model would keep).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from align.checkpoint import require_model_dir  # noqa: E402
from align.config import exit_with_error  # noqa: E402
from align.data import load_tokenizer  # noqa: E402
from align.modeling import AlignLlamaForCausalLM  # noqa: E402
from align.rejection_sampling import (  # noqa: E402
    RejectionSamplingConfig,
    best_of_k,
    best_of_k_curve,
    picked_curve,
)
from align.reward_sources import REWARD_HELP, RewardScorer, parse_reward_spec  # noqa: E402
from align.world import World, WorldPrompt, gold_helpfulness, is_violation  # noqa: E402


def sweep(models: dict, tokenizer, prompts: list[WorldPrompt], k: int, temperature: float, args) -> dict:
    """Best-of-k curves at one temperature."""
    config = RejectionSamplingConfig(
        policy="-", helpfulness_rm="-", safety_rm="-", prompts="world", num_samples=k, temperature=temperature,
        top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed,
    )  # fmt: skip
    records = []
    for prompt in prompts:
        record = best_of_k(models["policy"], tokenizer, models["reward"], prompt.to_record(), config)
        record["gold"] = [gold_helpfulness(prompt, answer) for answer in record["candidates"]]
        record["violation"] = [float(is_violation(prompt, answer)) for answer in record["candidates"]]
        records.append(record)
    helpful = [r for r in records if not r["is_safety"]]
    safety = [r for r in records if r["is_safety"]]
    curve = best_of_k_curve(records)
    return {
        "k": curve["k"],
        "reward_best": curve["max"],
        "reward_median": curve["median"],
        "gold_helpfulness_of_pick": picked_curve(helpful, "gold"),
        "violation_rate_of_pick": picked_curve(safety, "violation") if safety else [],
        "oracle_gold_helpfulness": best_of_k_curve(helpful, "gold")["max"],
        "mean_gold_helpfulness_of_samples": statistics.fmean(statistics.fmean(r["gold"]) for r in helpful),
    }


def plot(results: dict, path: Path) -> None:
    figure, (reward_axis, gold_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for temperature, result in results.items():
        reward_axis.plot(result["k"], result["reward_best"], marker="o", label=f"best, T={temperature}")
        reward_axis.plot(result["k"], result["reward_median"], linestyle="--", label=f"median, T={temperature}")
        gold_axis.plot(result["k"], result["gold_helpfulness_of_pick"], marker="o", label=f"RM pick, T={temperature}")
        gold_axis.plot(result["k"], result["oracle_gold_helpfulness"], linestyle=":", label=f"oracle, T={temperature}")
    reward_axis.set(xlabel="k samples", ylabel="gated reward", xscale="log", title="reward of best-of-k")
    gold_axis.set(xlabel="k samples", ylabel="gold helpfulness", xscale="log", title="gold of the kept answer")
    reward_axis.legend(fontsize=7)
    gold_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--helpfulness_rm", help="helpfulness reward model (the Llama 2 gate's; or --reward)")
    parser.add_argument("--safety_rm", help="safety reward model (the Llama 2 gate's; or --reward)")
    parser.add_argument("--reward", help=REWARD_HELP)
    parser.add_argument("--prompts", type=int, default=100, help="world prompts")
    parser.add_argument("--split", default="test", help="test (held out) or train (the prompts RS runs on)")
    parser.add_argument("--prompt_seed", type=int, default=0, help="which world prompts")
    parser.add_argument("--k", type=int, default=16, help="largest K")
    parser.add_argument("--temperatures", default="1.0", help="comma-separated")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--world_seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/best_of_k_eval"))
    args = parser.parse_args(argv)
    try:
        policy = require_model_dir(args.policy, "policy")
        spec = parse_reward_spec(args.reward, args.helpfulness_rm, args.safety_rm)
        temperatures = [float(t) for t in args.temperatures.split(",")]
        models = {"policy": AlignLlamaForCausalLM.from_pretrained(policy), "reward": RewardScorer.load(spec)}
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(str(error), "best_of_k")
    tokenizer = load_tokenizer(policy)
    prompts = World(seed=args.world_seed).prompts(args.prompts, args.split, seed=args.prompt_seed)
    torch.set_grad_enabled(False)
    results = {str(t): sweep(models, tokenizer, prompts, args.k, t, args) for t in temperatures}
    shown = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= args.k]
    print(f"{'T':>5s} {'k':>3s} {'reward best':>12s} {'gold of pick':>13s} {'violations':>11s} {'oracle gold':>12s}")
    for temperature, result in results.items():
        for k in shown:
            violation = result["violation_rate_of_pick"][k - 1] if result["violation_rate_of_pick"] else float("nan")
            print(
                f"{temperature:>5s} {k:>3d} {result['reward_best'][k - 1]:>12.3f} "
                f"{result['gold_helpfulness_of_pick'][k - 1]:>13.3f} {violation:>11.3f} "
                f"{result['oracle_gold_helpfulness'][k - 1]:>12.3f}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "by_temperature": results}
    (args.out / "best_of_k_eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(results, args.out / "best_of_k_eval.png")
    return summary


if __name__ == "__main__":
    main()
