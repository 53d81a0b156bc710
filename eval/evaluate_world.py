"""Gold metrics of one or more checkpoints on the synthetic world's held-out prompts.

    python eval/evaluate_world.py runs/pretrain/world_small/final runs/sft/world_small/final --prompts 200

Answers every prompt greedily in the Llama 2 chat format and prints, per checkpoint: mean gold helpfulness
(helpfulness prompts), mean gold helpfulness over all prompts, safety violation rate (safety prompts) and
false-refusal rate. `--json` also writes the table and a few answers.

`--paired` also prints each checkpoint's gold helpfulness minus the one before it with a 95% bootstrap interval
over the prompts: every checkpoint answers the same prompts, so the paired difference is far more precise than
the two means (on the demo, 200 prompts give about +-0.03 on a mean; a paired difference on 2,800 helpfulness
prompts, +-0.007). `--prompt_seed 1` draws held-out prompts other than the rounds' evaluation (seed 0).

    python eval/evaluate_world.py runs/demo/round-{1,2,3}/dpo/final --prompts 4000 --prompt_seed 1 \
        --max_new_tokens 128 --paired
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from align.checkpoint import require_model_dir
from align.config import exit_with_error
from align.data import load_tokenizer
from align.modeling import AlignLlamaForCausalLM
from align.reports.statistics import mean_with_interval
from align.world import World
from align.world.evaluation import evaluate_policy
from align.world.gold import gold_helpfulness

COLUMNS = ("gold_helpfulness", "gold_helpfulness_all", "violation_rate", "false_refusal_rate")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="checkpoint directories")
    parser.add_argument("--prompts", type=int, default=200, help="held-out test prompts")
    parser.add_argument("--prompt_seed", type=int, default=0, help="draw of the held-out prompts (0: the rounds')")
    parser.add_argument("--world_seed", type=int, default=0)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--paired", action="store_true", help="each checkpoint's gain over the one before it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        directories = [require_model_dir(model, "model") for model in args.models]
    except FileNotFoundError as error:
        exit_with_error(str(error), "evaluate_world")
    prompts = World(seed=args.world_seed).prompts(args.prompts, "test", seed=args.prompt_seed)
    results, per_prompt = {}, {}
    print(f"{'checkpoint':50s} " + " ".join(f"{c:>20s}" for c in COLUMNS))
    for directory in directories:
        model = AlignLlamaForCausalLM.from_pretrained(directory)
        metrics, answers = evaluate_policy(model, load_tokenizer(directory), prompts, args.max_new_tokens)
        results[str(directory)] = {**metrics, "examples": [[p.question, a] for p, a in zip(prompts[:8], answers)]}
        per_prompt[str(directory)] = [gold_helpfulness(p, a) for p, a in zip(prompts, answers) if not p.is_safety]
        print(f"{str(directory)[-50:]:50s} " + " ".join(f"{metrics[c]:>20.3f}" for c in COLUMNS), flush=True)
    if args.paired:
        names = list(per_prompt)
        for before, after in zip(names, names[1:]):
            gain, low, high = mean_with_interval([b - a for a, b in zip(per_prompt[before], per_prompt[after])])
            results[after]["gold_helpfulness_gain"] = [gain, low, high]
            print(f"{after[-50:]} minus {before[-50:]}: gold helpfulness {gain:+.4f} [{low:+.4f}, {high:+.4f}] "
                  f"on {len(per_prompt[after])} prompts", flush=True)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
