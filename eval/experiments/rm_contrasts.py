"""What a helpfulness reward model can tell apart (demo world): the right answer against one controlled flaw.

    python eval/experiments/rm_contrasts.py runs/demo/round-{0,1,2,3}/reward_model_helpfulness/final

On held-out helpfulness prompts (a draw other than the rounds' evaluation, `--prompt_seed 1`), the world's right
answer (kept format and rule) is paired with the same answer carrying one flaw, and the reward model is right when
it scores the right answer higher (a tie counts half). Contrasts:

    refusal                a refusal
    off_topic              a true answer to another question (the world's "wrong" quality)
    near:arithmetic/fact   a near miss: the sum off by 1-2, another value of the asked attribute
    format:<kind>/rule:<kind>  the right answer that ignores the prompt's format instruction or system rule

Only pairs that the gold scorers rank the same way are kept (an off-topic answer can happen to be right).
Rejection sampling's candidates (eval/experiments/rm_signal.py) mix these flaws; these pairs separate them. A
diagnostic of eval/experiments/rounds_compound.md (thirteenth session).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from align.checkpoint import require_reward_model_dir
from align.config import exit_with_error
from align.data import load_tokenizer
from align.io import atomic_write_text
from align.modeling.loading import load_sequence_classifier
from align.rewards import score
from align.world import World
from align.world.gold import gold_helpfulness
from align.world.tasks import WorldPrompt

Scorer = Callable[[Sequence[WorldPrompt], Sequence[str]], Sequence[float]]


def contrast_pairs(
    world: World, prompts: Sequence[WorldPrompt], seed: int = 0
) -> list[tuple[str, WorldPrompt, str, str]]:
    """(contrast, prompt, right answer, flawed answer) for every contrast that applies to each helpfulness prompt."""
    rng = random.Random(seed)
    pairs = []
    for prompt in prompts:
        if prompt.is_safety:
            continue
        task, right = prompt.key["task"], world.respond(prompt, "good", rng)
        gold = gold_helpfulness(prompt, right)
        flawed = {"refusal": world.respond(prompt, "refusal", rng), "off_topic": world.respond(prompt, "wrong", rng)}
        if task in ("arithmetic", "fact"):
            flawed[f"near:{task}"] = world.respond(prompt, "near", rng)
        if prompt.kind in ("format", "system"):
            instruction = f"format:{prompt.key['format']}" if prompt.kind == "format" else f"rule:{prompt.key['rule']}"
            flawed[instruction] = world.respond(prompt, "unformatted", rng)
        # a flaw the gold scorers do not see (an off-topic answer that happens to be right) makes no pair
        worse = {name: answer for name, answer in flawed.items() if gold_helpfulness(prompt, answer) < gold}
        pairs += [(name, prompt, right, answer) for name, answer in worse.items()]
    return pairs


def contrast_accuracy(
    score: Scorer, pairs: Sequence[tuple[str, WorldPrompt, str, str]]
) -> dict[str, dict[str, float]]:
    """Per contrast: the share of pairs whose right answer `score` ranks higher (ties half) and the pair count."""
    prompts = [prompt for _, prompt, _, _ in pairs]
    right = score(prompts, [answer for _, _, answer, _ in pairs])
    flawed = score(prompts, [answer for _, _, _, answer in pairs])
    wins: dict[str, list[float]] = defaultdict(list)
    for (name, *_), a, b in zip(pairs, right, flawed):
        wins[name].append(1.0 if a > b else 0.5 if a == b else 0.0)
    return {name: {"accuracy": sum(v) / len(v), "pairs": len(v)} for name, v in sorted(wins.items())}


def reward_model_scorer(model_dir: Path) -> Scorer:
    """The helpfulness reward model in `model_dir` as a scorer (its raw score)."""
    model, tokenizer = load_sequence_classifier(model_dir, num_labels=None).eval(), load_tokenizer(model_dir)
    return lambda prompts, answers: score(model, tokenizer, [p.messages for p in prompts], list(answers)).raw.tolist()


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    return judge_contrasts(
        argv, __doc__, "helpfulness reward model directories", require_reward_model_dir, reward_model_scorer,
        "reward model", "rm_contrasts",
    )  # fmt: skip


def judge_contrasts(
    argv: list[str] | None,
    description: str | None,
    models_help: str,
    check_dir: Callable[[str], Path],
    make_scorer: Callable[[Path], Scorer],
    judged: str,
    prog: str,
) -> dict[str, dict[str, dict[str, float]]]:
    """A command that judges the held-out contrasts with each model directory given (`check_dir` refuses a wrong
    one: one line, exit 2, before any work), prints the table and optionally writes it as JSON."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=models_help)
    parser.add_argument(
        "--prompts", type=int, default=1500, help="held-out test prompts drawn (helpfulness ones used)"
    )
    parser.add_argument("--prompt_seed", type=int, default=1, help="draw of the held-out prompts (0: the rounds')")
    parser.add_argument("--world_seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        directories = [check_dir(model) for model in args.models]
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(str(error), prog)
    pairs = held_out_pairs(args.world_seed, args.prompts, args.prompt_seed)
    results = {str(model): contrast_accuracy(make_scorer(model), pairs) for model in directories}
    print_contrast_table(results, judged)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return results


def held_out_pairs(world_seed: int, prompts: int, prompt_seed: int) -> list[tuple[str, WorldPrompt, str, str]]:
    """The contrasts of `prompts` held-out test prompts of the world (draw `prompt_seed`)."""
    world = World(seed=world_seed)
    return contrast_pairs(world, world.prompts(prompts, "test", seed=prompt_seed))


def print_contrast_table(results: dict[str, dict[str, dict[str, float]]], judged: str) -> None:
    """One row per judge (the end of its path), one column per contrast, the pair counts first."""
    first = next(iter(results.values()))
    width = max(len(name) for name in first) + 2
    print(judged.ljust(40) + "".join(name.rjust(width) for name in first))
    print("pairs".ljust(40) + "".join(str(row["pairs"]).rjust(width) for row in first.values()))
    for model, rows in results.items():
        print(model[-40:].ljust(40) + "".join(f"{rows[name]['accuracy']:.3f}".rjust(width) for name in first))


if __name__ == "__main__":
    main()
