"""Build the synthetic world's data files from its seed (a few seconds on 2 cores).

    python data/build_world.py --seed 0 --out data/world [--tokenizer_out data/tokenizer]

Writes, all reproducible from the seed:
    corpus.txt                      pretraining documents, one per line (newlines inside a document escaped as " | ")
    prompts_train.jsonl, prompts_test.jsonl   WorldPrompt records (messages, is_safety, answer key)
    sft.jsonl                       {"messages": [...], "loss_on": "all"|"last"} demonstrations (GAtt: "last")
    preferences_helpfulness.jsonl, preferences_safety.jsonl   annotated pairs (align.data.load_preferences)
    manifest.json                   seed, sizes and counts
and, with --tokenizer_out, the demo tokenizer trained on the corpus (the one shipped in data/tokenizer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from align.data import train_tokenizer
from align.io import atomic_write_jsonl, atomic_write_text
from align.world import World


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/world"))
    parser.add_argument("--documents", type=int, default=30000, help="pretraining documents (~145 bytes each)")
    parser.add_argument("--prompts", type=int, default=2000, help="train prompts (test: a quarter of it)")
    parser.add_argument("--sft", type=int, default=2000, help="SFT demonstrations")
    parser.add_argument("--pairs", type=int, default=2000, help="prompts labelled per preference target")
    parser.add_argument("--tokenizer_out", type=Path, help="also train the demo tokenizer here")
    parser.add_argument("--vocab_size", type=int, default=4096)
    args = parser.parse_args(argv)
    for name in ("documents", "prompts", "sft", "pairs", "vocab_size"):
        if getattr(args, name) <= 0:
            sys.exit(f"build_world: --{name} must be positive, got {getattr(args, name)}")

    start = time.time()
    world = World(seed=args.seed)
    corpus = [document.replace("\n", " | ") for document in world.corpus(args.documents)]
    atomic_write_text(args.out / "corpus.txt", "\n".join(corpus) + "\n")
    counts = {"documents": len(corpus), "corpus_bytes": sum(len(d) + 1 for d in corpus)}
    train, test = world.prompts(args.prompts, "train"), world.prompts(max(1, args.prompts // 4), "test")
    counts["prompts_train"] = atomic_write_jsonl(args.out / "prompts_train.jsonl", (p.to_record() for p in train))
    counts["prompts_test"] = atomic_write_jsonl(args.out / "prompts_test.jsonl", (p.to_record() for p in test))
    counts["sft"] = atomic_write_jsonl(args.out / "sft.jsonl", world.sft_dialogues(args.sft))
    pair_prompts = world.prompts(args.pairs, "train", seed=1)
    for target in ("helpfulness", "safety"):
        pairs = world.preference_pairs(pair_prompts, target)
        counts[f"pairs_{target}"] = atomic_write_jsonl(args.out / f"preferences_{target}.jsonl", pairs)
    if args.tokenizer_out:
        tokenizer = train_tokenizer(corpus, vocab_size=args.vocab_size)
        tokenizer.save_pretrained(args.tokenizer_out)
        counts["tokenizer_size"] = len(tokenizer)
    manifest = {"seed": args.seed, "counts": counts, "seconds": round(time.time() - start, 1)}
    atomic_write_text(args.out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest))
    return manifest


if __name__ == "__main__":
    main()
