"""Is the world's signal reachable by a small model after a few minutes of pretraining? (issue 5)

Pretrains a model on the world corpus, then asks held-out world questions in the corpus's plain dialogue
format ("User: ...\\nAssistant:") and scores the greedy answers with the gold scorers, next to the same
model before training. Prints mean gold helpfulness per task and the share of fully right answers.

    python eval/world_pretrain_check.py --preset small --max_steps 400 --out runs/world_check
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from align.data import load_tokenizer
from align.generation import complete
from align.modeling import AlignLlamaForCausalLM
from align.pretrain import PretrainConfig, build_model, pretrain
from align.world import World, gold_helpfulness


def score(model, tokenizer, prompts) -> dict[str, dict[str, float]]:
    texts = [f"User: {p.question}\nAssistant:" for p in prompts]
    answers = complete(model, tokenizer, texts, max_new_tokens=24, stop="\n", add_special_tokens=True)
    by_kind = defaultdict(list)
    for prompt, answer in zip(prompts, answers):
        by_kind[prompt.kind].append(gold_helpfulness(prompt, answer))
    return {
        kind: {"mean": sum(s) / len(s), "right": sum(v == 1.0 for v in s) / len(s), "n": len(s)}
        for kind, s in sorted(by_kind.items())
    } | {"examples": [[p.question, a] for p, a in list(zip(prompts, answers))[:6]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--max_steps", type=int, default=400)
    parser.add_argument("--seq_length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--prompts", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path("runs/world_check"))
    args = parser.parse_args()
    config = PretrainConfig(
        output_dir=str(args.out / "pretrain"),
        dataset="world",
        model_preset=args.preset,
        seq_length=args.seq_length,
        per_device_batch_size=args.batch,
        max_steps=args.max_steps,
        lr=args.lr,
        warmup_steps=args.max_steps // 20,
        save_steps=args.max_steps,
        logging_steps=20,
    )
    tokenizer = load_tokenizer(config.tokenizer)
    prompts = World(seed=0).prompts(args.prompts, "test", mix={"arithmetic": 0.5, "fact": 0.4, "list": 0.1})
    torch.manual_seed(0)
    before = score(build_model(config, tokenizer), tokenizer, prompts)
    final = pretrain(config)
    after = score(AlignLlamaForCausalLM.from_pretrained(final), tokenizer, prompts)
    report = {"config": vars(args) | {"out": str(args.out)}, "before": before, "after": after}
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"{'task':12s} {'before: mean / right':>22s} {'after: mean / right':>22s}")
    for kind in (k for k in after if k != "examples"):
        b, a = before[kind], after[kind]
        print(f"{kind:12s} {b['mean']:>13.3f} / {b['right']:.2f} {a['mean']:>13.3f} / {a['right']:.2f}   (n={a['n']})")
    for question, answer in after["examples"]:
        print(f"  {question!r} -> {answer!r}")


if __name__ == "__main__":
    main()
