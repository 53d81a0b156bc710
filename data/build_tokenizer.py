"""Train the demo tokenizer (Llama-2-style BPE with byte fallback) on a local corpus and save it.

    python data/build_tokenizer.py --corpus CORPUS.txt [CORPUS2.jsonl ...] --vocab_size 4096 --out data/tokenizer

Text files are read whole, line by line; JSONL files contribute each record's "text" field. The result is
deterministic for the same corpus and size, and `AutoTokenizer.from_pretrained(out)` loads it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from align.data import train_tokenizer


def read_corpus(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        if not path.is_file():
            sys.exit(f"build_tokenizer: no corpus file at {path}")
        with path.open() as lines:
            for number, line in enumerate(lines, start=1):
                if path.suffix == ".jsonl":
                    try:
                        line = json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        sys.exit(f"build_tokenizer: {path}: line {number}: expected a JSON object with a 'text' field")
                if line.strip():
                    yield line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, nargs="+", required=True, help="text or JSONL files")
    parser.add_argument("--vocab_size", type=int, default=4096)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        tokenizer = train_tokenizer(read_corpus(args.corpus), vocab_size=args.vocab_size)
    except ValueError as error:
        sys.exit(f"build_tokenizer: {error}")
    tokenizer.save_pretrained(args.out)
    print(f"saved a {len(tokenizer)}-token tokenizer to {args.out}")


if __name__ == "__main__":
    main()
