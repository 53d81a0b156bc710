"""`align.pretrain.pack_documents` against the row-by-row re-slicing it replaced (issue 20), in the same run.

    python eval/bench/packing.py --tokens 100000 200000 400000 800000 --seq 4096

The reference cut each row with `buffer = buffer[seq_length:]`, copying the rest of the buffer once per row, so
one long document cost time quadratic in its length. Both pack the same token streams (many short documents,
and one document holding all the tokens) and must give the same rows; prints seconds and the ratio
reference / ours (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
import time

from align.pretrain import pack_documents


def pack_by_reslicing(documents, seq_length: int, eos_token_id: int) -> list[list[int]]:
    rows, buffer = [], []
    for tokens in documents:
        buffer.extend(tokens)
        buffer.append(eos_token_id)
        while len(buffer) >= seq_length:
            rows.append(buffer[:seq_length])
            buffer = buffer[seq_length:]
    return rows


def timed(pack, documents, seq_length: int) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    rows = pack(iter(documents), seq_length, 2)
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[100_000, 200_000, 400_000, 800_000])
    parser.add_argument("--seq", type=int, default=4096)
    args = parser.parse_args()
    print(f"{'tokens':>9s} {'documents':>12s} {'reference s':>12s} {'ours s':>9s} {'ratio':>8s}")
    for count in args.tokens:
        for label, documents in (
            ("500-token", [list(range(3, 503))] * (count // 500)),
            ("one", [list(range(3, 3 + count))]),
        ):
            reference_s, reference_rows = timed(pack_by_reslicing, documents, args.seq)
            ours_s, rows = timed(pack_documents, documents, args.seq)
            assert rows == reference_rows
            print(f"{count:>9d} {label:>12s} {reference_s:>12.3f} {ours_s:>9.3f} {reference_s / ours_s:>8.1f}")


if __name__ == "__main__":
    main()
