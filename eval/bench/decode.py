"""Decode tokens/s of align's loops against transformers' `LlamaForCausalLM.generate`, in the same run (issue 24).

    python eval/bench/decode.py --preset small --batch 8 --new_tokens 128 --repeats 5
    python eval/bench/decode.py --device cuda --dtype bfloat16 --batch 64      # a GPU

Same seed-0 weights in both models (ours copied into transformers' Llama), the same left-padded batch of
world prompts, greedy, exactly `--new_tokens` new tokens per row (the end of an answer suppressed), KV cache
on. Measured: transformers' `generate` (the reference), align's `sample_tokens` with `decode="dynamic"` (a
growing cache, no compile) and `decode="static"` (a pre-allocated cache and a `torch.compile`'d one-token
step; compiled once, before timing). Each is timed `--repeats` times, interleaved; the median and the best
are reported, and the tokens must be identical to the reference's (the benchmark stops otherwise; in bf16 the
share of identical rows is reported instead, since two kernels' roundings may tip a near-tie).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from align.data import load_tokenizer
from align.generation import chat_prompt_texts, sample_tokens
from align.io import atomic_write_text
from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM, to_llama_config
from align.world import World


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--tokenizer", default="data/tokenizer")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    tokenizer = load_tokenizer(args.tokenizer)
    config = AlignLlamaConfig.from_preset(args.preset, vocab_size=-(-len(tokenizer) // 64) * 64)
    torch.manual_seed(0)
    ours = AlignLlamaForCausalLM(config).eval()
    reference = LlamaForCausalLM(to_llama_config(config)).eval()
    reference.load_state_dict(ours.state_dict())
    ours, reference = ours.to(device, dtype), reference.to(device, dtype)

    texts = chat_prompt_texts(tokenizer, [p.messages for p in World(seed=0).prompts(args.batch, "test")])
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    fixed = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                 max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)  # fmt: skip
    runs = {
        "transformers_generate": lambda: sample_tokens(reference, batch.input_ids, batch.attention_mask,
                                                       decode="generate", **fixed),
        "align_dynamic": lambda: sample_tokens(ours, batch.input_ids, batch.attention_mask, decode="dynamic", **fixed),
        "align_static_compiled": lambda: sample_tokens(ours, batch.input_ids, batch.attention_mask, decode="static",
                                                       **fixed),
    }  # fmt: skip
    def timed(run) -> tuple[torch.Tensor, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return tokens, time.perf_counter() - start

    started = time.perf_counter()
    expected = runs["transformers_generate"]()
    same_rows = {}
    for name, run in runs.items():  # warm-up; the static loop compiles its step here
        tokens = run()
        same_rows[name] = (tokens == expected).all(dim=1).float().mean().item()
        if same_rows[name] < 1 and dtype == torch.float32:
            raise SystemExit(f"{name}: tokens differ from transformers' generate")
    compile_seconds = time.perf_counter() - started
    seconds = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            seconds[name].append(timed(run)[1])
    tokens = args.batch * args.new_tokens
    report = {
        "tokens_per_s_median": {name: tokens / statistics.median(s) for name, s in seconds.items()},
        "tokens_per_s_best": {name: tokens / min(s) for name, s in seconds.items()},
        "warm_up_and_compile_s": compile_seconds,
        "identical_rows": same_rows,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "args": vars(args) | {"json": str(args.json)},
    }
    for which in ("median", "best"):
        rates = report[f"tokens_per_s_{which}"]
        report[f"ratio_{which}"] = {
            name: rates[name] / rates["transformers_generate"] for name in ("align_dynamic", "align_static_compiled")
        }
        print(
            f"{which}: transformers generate {rates['transformers_generate']:.0f} tokens/s, align dynamic "
            f"{rates['align_dynamic']:.0f} ({report[f'ratio_{which}']['align_dynamic']:.2f}x), align static + "
            f"compiled {rates['align_static_compiled']:.0f} ({report[f'ratio_{which}']['align_static_compiled']:.2f}x)"
        )
    identical = ", ".join(f"{name} {share:.0%}" for name, share in same_rows.items())
    print(f"rows identical to generate's: {identical} ({args.batch} x {args.new_tokens}, greedy, {args.preset}, "
          f"{args.dtype}, {report['device']})")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
