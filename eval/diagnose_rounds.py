"""Why the rounds of a world run improve or stop: the diagnostics of `align.world.diagnostics` per round.

    python eval/diagnose_rounds.py runs/demo --rounds 1 2 3
    python eval/diagnose_rounds.py runs/demo --rounds 4 --policy runs/demo/round-4/rejection_sampling/sft/final

For each round: the round's policy (or `--policy`) with the round's reward models; round 0 is the SFT model
with the base reward models. Prints one table (oracle best-of-K, one sample, the reward models' pick, the
share captured, in a round with rejection sampling the gold of what it keeps under its recorded reward and
min_reward_gain, on-policy RM accuracy, the earlier rounds' helpfulness reward models on the same pairs, greedy
gold by kind) and writes it as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from align.checkpoint import require_model_dir
from align.config import exit_with_error
from align.data import load_tokenizer
from align.modeling import AlignLlamaForCausalLM
from align.rejection_sampling import recorded_keep_rule
from align.reports.rounds import load_reward_model
from align.reward_sources import RewardScorer, parse_reward_spec
from align.world import World
from align.world.diagnostics import gold_by_kind, round_diagnostics
from align.world.evaluation import evaluate_policy


def in_run(run_dir: Path, recorded: str) -> Path:
    """A checkpoint path of the manifest, which records it as the run was started (relative to that folder,
    e.g. `runs/demo/round-5/ppo/final`), found inside `run_dir` wherever this is run from."""
    path = Path(recorded)
    if path.is_absolute() or path.exists():
        return path
    rounds = [i for i, part in enumerate(path.parts) if part.startswith("round-")]
    return run_dir.joinpath(*path.parts[rounds[0] :]) if rounds else path


def round_checkpoints(run_dir: Path, n: int) -> dict[str, Path]:
    """The policy and reward models of round `n` of a run (round 0: the SFT model and the base RMs)."""
    stages = json.loads((run_dir / "manifest.json").read_text())["rounds"][str(n)]
    policy = stages["sft"]["final"] if n == 0 else next(stages[stage]["final"] for stage in ("ppo", "dpo",
                                                        "rejection_sampling") if stage in stages)  # fmt: skip
    return {"policy": in_run(run_dir, policy),
            **{t: in_run(run_dir, stages[f"reward_model_{t}"]["final"]) for t in ("helpfulness", "safety")}}  # fmt: skip


def earlier_helpfulness_rms(run_dir: Path, n: int) -> dict[int, Path]:
    """The helpfulness reward models of rounds 0..n-1 that the run has (a run whose rounds start their reward
    models from the SFT model has none of its own in round 0)."""
    stages = json.loads((run_dir / "manifest.json").read_text())["rounds"]
    return {r: in_run(run_dir, stages[str(r)]["reward_model_helpfulness"]["final"]) for r in range(n)
            if "reward_model_helpfulness" in stages.get(str(r), {})}  # fmt: skip


def rejection_sampling_choice(run_dir: Path, n: int, loaded: dict | None = None) -> dict:
    """Round `n`'s rejection sampling as it ran (its recorded reward and min_reward_gain, checkpoints found in
    `run_dir`), as `round_diagnostics`' `reward` and `min_reward_gain`; {} for a round without one. `loaded`:
    reward models already in memory, (model, tokenizer) by folder, used instead of loading them again."""
    stage = json.loads((run_dir / "manifest.json").read_text())["rounds"][str(n)].get("rejection_sampling")
    if stage is None:
        return {}
    config = stage["config"]
    found = {key: str(in_run(run_dir, config[key])) if config.get(key) else None for key in ("helpfulness_rm",
                                                                                            "safety_rm")}  # fmt: skip
    reward = config.get("reward")
    if reward:
        sources = {name: {key: str(in_run(run_dir, value)) if key in ("model", "likelihood") else value
                          for key, value in source.items()} for name, source in reward["sources"].items()}  # fmt: skip
        reward = {**reward, "sources": sources}
    spec = parse_reward_spec(reward, found["helpfulness_rm"], found["safety_rm"])
    return {"reward": RewardScorer.load(spec, loaded=loaded), **recorded_keep_rule(config)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rounds", type=int, nargs="+", default=[0])
    parser.add_argument("--policy", help="judge this checkpoint with the round's reward models instead")
    parser.add_argument("--prompts", type=int, default=200, help="held-out test prompts")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--world_seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    prompts = World(seed=args.world_seed).prompts(args.prompts, "test")
    table = {}
    for n in args.rounds:
        try:
            checkpoints = round_checkpoints(args.run_dir, n)
            policy_dir = require_model_dir(args.policy or checkpoints["policy"], "policy")
        except (FileNotFoundError, KeyError) as error:
            exit_with_error(f"round {n}: {error}", "diagnose_rounds")
        tokenizer = load_tokenizer(policy_dir)
        policy = AlignLlamaForCausalLM.from_pretrained(policy_dir).eval()
        loaded = {checkpoints[t]: load_reward_model(checkpoints[t], f"round {n} {t} reward model")
                  for t in ("helpfulness", "safety")}  # fmt: skip
        rms = {t: loaded[checkpoints[t]][0] for t in ("helpfulness", "safety")}
        rm_tokenizers = {t: loaded[checkpoints[t]][1] for t in ("helpfulness", "safety")}
        metrics, answers = evaluate_policy(policy, tokenizer, prompts)
        row = {"policy": str(policy_dir), **metrics, **gold_by_kind(prompts, answers)}
        earlier = {r: partial(load_reward_model, folder, f"round {r} helpfulness reward model")
                   for r, folder in earlier_helpfulness_rms(args.run_dir, n).items()}  # fmt: skip
        row.update(round_diagnostics(policy, tokenizer, rms["helpfulness"], rms["safety"],
                                     rm_tokenizers["helpfulness"], prompts,
                                     num_samples=args.k, temperature=args.temperature, seed=n,
                                     **rejection_sampling_choice(args.run_dir, n, loaded),
                                     earlier_helpfulness_rms=earlier))  # fmt: skip
        table[n] = row
        print(f"round {n}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(table, indent=2))
    return table


if __name__ == "__main__":
    main()
