"""Peak memory of a PPO update step and an SFT step at Llama 3's vocabulary: chunked logits vs the whole logits,
measured in the same run, each next to `align.plan`'s figure.

    python eval/bench/vocab_memory.py [--vocab 128256] [--out eval/bench/results/vocab_memory_cpu.json]

A random Llama (hidden 64, 2 layers, fp32, the vocabulary of Llama 3: the LM head is most of the model, as the
logits are most of a step's memory) and, for PPO, a value model of the same shape. Each variant runs in its own
subprocess; a warm-up step allocates gradients, then the peak resident memory of the next forward + backward
above what was held before it is measured (`align.plan.activation_peak`: the kernel's peak resident memory on a
CPU, the allocator's peak with `--device cuda`; largest of 3 steps):

- PPO: `PolicyAndValue` over `rows` x (prompt + response) tokens, the policy's log-probs of the response from
  `align.logprobs` with `logits_chunk_tokens` positions at a time (the default 1024) or all at once (0), and a
  policy-gradient-style loss on them plus the values';
- SFT: the loss over every position, through TRL's fused LM head (what `SFTTrainer`, and so `align sft`, runs)
  or through the model's own forward with `labels` (the whole logits).

The planner's activations for the same shape (`align.plan.activation_bytes`, fp32, torch's "math" attention on a
CPU, flash on CUDA, no activation checkpointing) are printed beside each; the ratio chunked / whole is the point.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

MIB = 2**20


def build(vocab: int, hidden: int, layers: int, head: str = "lm"):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, num_labels=1,
                         attn_implementation="sdpa")  # fmt: skip
    torch.manual_seed(0)
    return (LlamaForCausalLM if head == "lm" else LlamaForSequenceClassification)(config)


def measure(args: argparse.Namespace) -> dict:
    """One variant (`args.variant`), in this process: the peak bytes of a step above what is held before it."""
    from align.plan import activation_peak

    device = torch.device(args.device)
    policy = build(args.vocab, args.hidden, args.layers).to(device)
    length = args.prompt + args.response
    ids = torch.randint(args.vocab, (args.rows, length), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    if args.variant.startswith("ppo"):
        from align.ppo import PolicyAndValue

        model = PolicyAndValue(policy, build(args.vocab, args.hidden, args.layers, head="score").to(device))
        chunk = args.chunk if args.variant == "ppo_chunked" else 0

        def step() -> None:
            logprobs, _, values = model(ids, mask, ids[:, -args.response :], 1.0, chunk)
            (-logprobs.mean() + values.pow(2).mean()).backward()
    else:
        if args.variant == "sft_fused":
            from trl.trainer import add_fused_lm_head

            add_fused_lm_head(policy, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does

            def step() -> None:
                policy(input_ids=ids, attention_mask=mask, labels=ids, fused_lm_head=True, use_cache=False).loss.backward()
        else:

            def step() -> None:
                policy(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False).loss.backward()

    step()  # allocates the gradients
    return {"variant": args.variant, "peak": max(activation_peak(step, device) for _ in range(3))}


def planned(args: argparse.Namespace, variant: str) -> int:
    """`align.plan`'s activations for the variant's shape (policy, plus the value model for PPO)."""
    from align.modeling import AlignLlamaConfig
    from align.plan import activation_bytes

    config = AlignLlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                              num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    length = args.prompt + args.response
    # PPO's planner entry is align.logprobs' computation at the run's chunk (0: every position at once).
    logits, chunk = {"ppo_chunked": ("chunked", args.chunk), "ppo_whole": ("chunked", 0), "sft_fused": ("fused", 0),
                     "sft_whole": ("full", 0)}[variant]  # fmt: skip
    attention = "flash" if args.device == "cuda" else "math"
    common = dict(batch_size=args.rows, seq_length=length, dtype_bytes=4, checkpointing=False, attention=attention)
    total = activation_bytes(config, head="lm", logits=logits, chunk_tokens=chunk, **common)
    if variant.startswith("ppo"):
        total += activation_bytes(config, head="score", **common)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--response", type=int, default=192)
    parser.add_argument("--chunk", type=int, default=1024, help="PPO's logits_chunk_tokens")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the allocator's peak)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # set for the measuring subprocess
    parser.add_argument("--out", type=Path, default=Path("eval/bench/results/vocab_memory_cpu.json"))
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return
    rows = []
    shape = f"vocab {args.vocab}, hidden {args.hidden}, {args.rows} rows x {args.prompt}+{args.response} tokens, {args.device}"
    print(shape)
    print(f"{'variant':12s} {'measured MiB':>13s} {'planned MiB':>12s} {'plan/measured':>14s}")
    for variant in ("ppo_chunked", "ppo_whole", "sft_fused", "sft_whole"):
        command = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(result.stdout.strip().splitlines()[-1])
        row["planned"] = planned(args, variant)
        rows.append(row)
        print(f"{variant:12s} {row['peak'] / MIB:13.1f} {row['planned'] / MIB:12.1f} {row['planned'] / row['peak']:14.2f}")
    peak = {row["variant"]: row["peak"] for row in rows}
    ratios = {"ppo chunked / whole": peak["ppo_chunked"] / peak["ppo_whole"],
              "sft fused / whole": peak["sft_fused"] / peak["sft_whole"]}  # fmt: skip
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"shape": shape, "rows": rows, "ratios": ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
