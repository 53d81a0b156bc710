"""Gold metrics of one or more checkpoints on the synthetic world's held-out prompts.

    python eval/evaluate_world.py runs/pretrain/world_small/final runs/sft/world_small/final --prompts 200

Answers every prompt greedily in the Llama 2 chat format and prints, per checkpoint: mean gold helpfulness
(helpfulness prompts), mean gold helpfulness over all prompts, safety violation rate (safety prompts) and
false-refusal rate. `--json` also writes the table and a few answers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from align.checkpoint import require_model_dir
from align.config import exit_with_error
from align.data import load_tokenizer
from align.modeling import AlignLlamaForCausalLM
from align.world import World
from align.world.evaluation import evaluate_policy

COLUMNS = ("gold_helpfulness", "gold_helpfulness_all", "violation_rate", "false_refusal_rate")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="checkpoint directories")
    parser.add_argument("--prompts", type=int, default=200, help="held-out test prompts")
    parser.add_argument("--world_seed", type=int, default=0)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        directories = [require_model_dir(model, "model") for model in args.models]
    except FileNotFoundError as error:
        exit_with_error(str(error), "evaluate_world")
    prompts = World(seed=args.world_seed).prompts(args.prompts, "test")
    results = {}
    print(f"{'checkpoint':50s} " + " ".join(f"{c:>20s}" for c in COLUMNS))
    for directory in directories:
        model = AlignLlamaForCausalLM.from_pretrained(directory)
        metrics, answers = evaluate_policy(model, load_tokenizer(directory), prompts, args.max_new_tokens)
        results[str(directory)] = {**metrics, "examples": [[p.question, a] for p, a in zip(prompts[:8], answers)]}
        print(f"{str(directory)[-50:]:50s} " + " ".join(f"{metrics[c]:>20.3f}" for c in COLUMNS), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
