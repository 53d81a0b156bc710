"""The memory planner (`align.plan`) against measured training steps, on a CPU or a CUDA GPU.

    python eval/bench/memory.py [--out eval/bench/results/memory_cpu.json]
    python eval/bench/memory.py --device cuda --mixed_precision bf16 --out eval/bench/results/memory_cuda_bf16.json

For each layout (preset, layers, batch shape), with and without activation checkpointing, one AdamW step of a
causal LM is measured with `align.plan.measure_training_step` (weights, gradients and optimizer state read off the
tensors; activations as the peak of forward + backward above what was held before it, largest of 3 steps: on a
CPU the kernel's peak resident memory, on CUDA the allocator's peak) and printed next to `plan_memory` for the
same layout: on a CPU fp32 and torch's "math" attention; on CUDA flash attention (sdpa) and, with
`--mixed_precision bf16`, fp32 weights with a bf16 autocast forward, as `Trainer`'s `bf16=True` runs it (the
plan's `bf16`). The ratio plan / measured is the check: the target is within 20% of the peak.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM
from align.plan import PlanConfig, measure_training_step, plan_memory

# (preset, layers (0 = the preset's), micro-batch, sequence length)
CPU_LAYOUTS = [("tiny", 0, 16, 256), ("small", 0, 8, 256), ("small", 0, 16, 256)]
CUDA_LAYOUTS = [("tiny", 0, 16, 256), ("small", 0, 16, 256), ("small", 0, 8, 1024), ("7b", 4, 2, 2048)]
MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16"], help="bf16: autocast (CUDA)")
    parser.add_argument("--out", type=Path, default=Path("eval/bench/results/memory_cpu.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    autocast = torch.bfloat16 if args.mixed_precision == "bf16" else None
    torch.manual_seed(0)
    rows = []
    print(f"{args.device}, mixed precision {args.mixed_precision}")
    print(f"{'preset':7s} {'layers':>6s} {'batch':>9s} {'ckpt':>5s} {'planned MiB':>12s} {'measured MiB':>13s} "
          f"{'ratio':>6s} {'act. planned':>13s} {'act. measured':>14s} {'ratio':>6s}")  # fmt: skip
    for preset, layers, batch, length in CUDA_LAYOUTS if device.type == "cuda" else CPU_LAYOUTS:
        for checkpointing in (False, True):
            config = AlignLlamaConfig.from_preset(preset, **({"num_hidden_layers": layers} if layers else {}))
            model = AlignLlamaForCausalLM(config).to(device)
            measured = measure_training_step(model, batch, length, checkpointing, autocast=autocast)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            plan = plan_memory(
                PlanConfig(
                    preset=preset,
                    stage="pretrain",
                    gpus=1,
                    dtype="bf16" if autocast is not None else "fp32",
                    micro_batch_size=batch,
                    seq_length=length,
                    activation_checkpointing=checkpointing,
                    attention="flash" if device.type == "cuda" else "math",
                    gpu_memory_gib=1e6,
                ),
                config,
            )
            row = {
                "preset": preset,
                "layers": config.num_hidden_layers,
                "batch": f"{batch}x{length}",
                "checkpointing": checkpointing,
                "planned": plan.components,
                "measured": measured,
                "ratio": plan.total / sum(measured.values()),
                "activations_ratio": plan.components["activations"] / measured["activations"],
            }
            rows.append(row)
            print(
                f"{preset:7s} {config.num_hidden_layers:6d} {row['batch']:>9s} {str(checkpointing):>5s} "
                f"{plan.total / MIB:12.1f} {sum(measured.values()) / MIB:13.1f} {row['ratio']:6.2f} "
                f"{plan.components['activations'] / MIB:13.1f} {measured['activations'] / MIB:14.1f} "
                f"{row['activations_ratio']:6.2f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
