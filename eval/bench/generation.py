"""Samples/s of rejection sampling's batched sampler against a naive loop, in the same run (issues 8, 24).

    python eval/bench/generation.py --preset small --prompts 64 --k 8 --new_tokens 32

Batched: what `align.rejection_sampling` does: `align.generation.complete` over the K rows of every prompt,
each row seeded on its own, sorted by prompt length, `--batch_size` rows per batch (rows of several prompts),
align's decode loop. Naive: one transformers `generate()` call per prompt and sample. Same model, prompts,
sampling settings and answer length (every answer is exactly `--new_tokens` long, end-of-sequence disabled, so
dropping finished rows saves nothing here). Prints both rates and the ratio (target >= 10x at K = 8 on 64
prompts, `small`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from align.data import load_tokenizer
from align.generation import chat_prompt_texts, complete
from align.io import atomic_write_text
from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM
from align.world import World


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--model", help="a checkpoint instead of a random model of --preset")
    parser.add_argument("--tokenizer", default="data/tokenizer")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=64, help="rows per batch (rejection sampling's default)")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    model = (
        AlignLlamaForCausalLM.from_pretrained(args.model)
        if args.model
        else AlignLlamaForCausalLM(AlignLlamaConfig.from_preset(args.preset, vocab_size=-(-len(tokenizer) // 64) * 64))
    )
    texts = chat_prompt_texts(tokenizer, [p.messages for p in World(seed=0).prompts(args.prompts, "test")])
    fixed = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, temperature=1.0)
    complete(model, tokenizer, texts[:1] * args.k, batch_size=args.k, **fixed)  # warm-up
    rows = [text for text in texts for _ in range(args.k)]

    start = time.perf_counter()
    complete(model, tokenizer, rows, batch_size=args.batch_size, row_seeds=list(range(len(rows))), **fixed)
    batched = time.perf_counter() - start

    start = time.perf_counter()
    for text in rows:
        complete(model, tokenizer, [text], batch_size=1, decode="generate", **fixed)
    naive = time.perf_counter() - start

    samples = args.prompts * args.k
    report = {
        "samples": samples,
        "batched_samples_per_s": samples / batched,
        "naive_samples_per_s": samples / naive,
        "ratio": naive / batched,
        "threads": torch.get_num_threads(),
        "args": vars(args) | {"json": str(args.json)},
    }
    print(
        f"batched {report['batched_samples_per_s']:.1f} samples/s, naive {report['naive_samples_per_s']:.1f} "
        f"samples/s: ratio {report['ratio']:.2f}x (K={args.k}, {args.new_tokens} tokens, {args.preset})"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
