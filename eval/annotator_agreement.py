"""How often each annotator agrees with the gold preference, on a comparison batch of the synthetic world.

    python eval/annotator_agreement.py --policy runs/demo/round-3/rejection_sampling/sft/final \\
        --rm runs/demo/round-3/reward_model_helpfulness/final runs/demo/round-3/reward_model_safety/final \\
        --judge runs/demo/round-0/sft/final --prompts 200 --out runs/agreement

Writes a round's kind of comparison batch (two sampled answers of `--policy` per held-out world prompt,
`align.annotation`), labels it with the world's simulated annotator, each `--rm` (align.ai_feedback's reward-model
annotator) and each `--judge` (its chat-model judge, with `--template`), and compares every choice with the gold
one: the answer with the higher gold helpfulness (helpfulness prompts) or gold safety (safety prompts; gold
helpfulness between two equally safe answers), as the world's annotator defines it. Pairs the gold cannot
separate are left out. Prints and writes `agreement.json`: per annotator and prompt kind, the pairs it labelled,
those it could not (unparsable judge answers) and its agreement with gold on the labelled ones.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from align.ai_feedback import JudgeAnnotator, RewardModelAnnotator, annotate_batch
from align.annotation import write_annotation_batch
from align.checkpoint import require_model_dir
from align.config import exit_with_error
from align.data import load_tokenizer
from align.io import atomic_write_text, read_jsonl
from align.modeling import AlignLlamaForCausalLM
from align.prompts import load_prompts
from align.world import WorldPrompt
from align.world.annotator import annotate, gold_gap

KINDS = ("helpfulness", "safety")


def gold_choices(batch: list[dict], prompts: dict[str, WorldPrompt]) -> dict[str, str]:
    """The gold choice ("a" / "b") of every pair the gold separates, by id."""
    choices = {}
    for record in batch:
        target = "safety" if record["is_safety"] else "helpfulness"
        gap = gold_gap(prompts[record["id"]], record["response_a"], record["response_b"], target)
        if gap:
            choices[record["id"]] = "a" if gap > 0 else "b"
    return choices


def world_annotator_labels(batch: list[dict], prompts: dict[str, WorldPrompt], seed: int = 0) -> list[dict]:
    """The world's simulated annotator (the demo's human stand-in, noisy where the gold gap is small)."""
    rng = random.Random(seed)
    labels = []
    for record in batch:
        target = "safety" if record["is_safety"] else "helpfulness"
        label = annotate(prompts[record["id"]], record["response_a"], record["response_b"], target, rng)
        labels.append({**record, "choice": "a" if label["chosen"] == record["response_a"] else "b"})
    return labels


def agreement(labelled: list[dict], gold: dict[str, str]) -> dict[str, dict[str, float | int]]:
    """Per prompt kind: pairs labelled, pairs left unlabelled, agreement with gold on the labelled ones."""
    table = {}
    for kind in KINDS:
        rows = [r for r in labelled if r["id"] in gold and r["is_safety"] == (kind == "safety")]
        chosen = [r for r in rows if r.get("choice") in ("a", "b")]
        agreed = sum(r["choice"] == gold[r["id"]] for r in chosen)
        table[kind] = {"labelled": len(chosen), "unlabelled": len(rows) - len(chosen),
                       "agreement": agreed / len(chosen) if chosen else None}  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="the model whose two answers per prompt are compared")
    parser.add_argument("--rm", nargs="*", default=[], help="reward models to annotate with")
    parser.add_argument("--judge", nargs="*", default=[], help="chat models to annotate with")
    parser.add_argument("--template", help="the judges' prompt template (default: align's judge_prompt.txt)")
    parser.add_argument("--prompts", type=int, default=200, help="held-out world prompts")
    parser.add_argument("--world_seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/agreement"))
    args = parser.parse_args(argv)
    try:
        policy = require_model_dir(args.policy, "policy")
        records = load_prompts("world", world_seed=args.world_seed, world_prompts=args.prompts, split="test",
                               world_prompt_seed=args.seed)  # fmt: skip
        batch_path = args.out / "to_annotate.jsonl"
        write_annotation_batch(AlignLlamaForCausalLM.from_pretrained(policy), load_tokenizer(policy), records,
                               batch_path, max_new_tokens=48, seed=args.seed)  # fmt: skip
        annotators = [RewardModelAnnotator(path) for path in args.rm]
        annotators += [JudgeAnnotator(path, args.template) for path in args.judge]
    except (FileNotFoundError, ValueError) as error:
        exit_with_error(str(error), "annotator_agreement")
    batch = read_jsonl(batch_path)
    prompts = {record["id"]: WorldPrompt.from_record(record) for record in records}
    gold = gold_choices(batch, prompts)
    results = {"world annotator": agreement(world_annotator_labels(batch, prompts, args.seed), gold)}
    for index, annotator in enumerate(annotators):
        out = args.out / f"annotated_{index}.jsonl"
        counts = annotate_batch(batch_path, out, annotator)
        results[annotator.name] = {**agreement(read_jsonl(out), gold), "unparsable": counts["unparsable"]}
    report = {"pairs": len(batch), "gold_separates": len(gold), "policy": str(policy), "annotators": results}
    atomic_write_text(args.out / "agreement.json", json.dumps(report, indent=2) + "\n")
    print(f"{len(batch)} pairs, {len(gold)} separated by gold; agreement with gold (labelled / unlabelled):")
    for name, table in results.items():
        cells = [f"{kind} {table[kind]['agreement'] if table[kind]['agreement'] is None else round(table[kind]['agreement'], 3)}"
                 f" ({table[kind]['labelled']} / {table[kind]['unlabelled']})" for kind in KINDS]  # fmt: skip
        print(f"  {name}: {', '.join(cells)}")
    return report


if __name__ == "__main__":
    main()
