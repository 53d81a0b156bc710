"""The memory planner (`align.plan`) against measured training steps on the CPU presets.

    python eval/bench/memory.py [--out eval/bench/results/memory_cpu.json]

For each preset and batch shape, with and without activation checkpointing, one AdamW step of a causal LM
is measured with `align.plan.measure_training_step` (weights, gradients and optimizer state read off the
tensors; activations as the resident-memory peak of forward + backward, largest of 3 steps) and printed next
to `plan_memory` for the same layout (fp32, torch's CPU "math" attention). The ratio plan / measured is the
check: the issue's target is within 20% of the peak.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM
from align.plan import PlanConfig, measure_training_step, plan_memory

LAYOUTS = [("tiny", 16, 256), ("small", 8, 256), ("small", 16, 256)]
MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("eval/bench/results/memory_cpu.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    print(f"{'preset':7s} {'batch':>9s} {'ckpt':>5s} {'planned MiB':>12s} {'measured MiB':>13s} {'ratio':>6s}")
    for preset, batch, length in LAYOUTS:
        for checkpointing in (False, True):
            config = AlignLlamaConfig.from_preset(preset)
            measured = measure_training_step(AlignLlamaForCausalLM(config), batch, length, checkpointing)
            plan = plan_memory(
                PlanConfig(
                    preset=preset,
                    stage="pretrain",
                    gpus=1,
                    dtype="fp32",
                    micro_batch_size=batch,
                    seq_length=length,
                    activation_checkpointing=checkpointing,
                    attention="math",
                ),
                config,
            )
            row = {
                "preset": preset,
                "batch": f"{batch}x{length}",
                "checkpointing": checkpointing,
                "planned": plan.components,
                "measured": measured,
                "ratio": plan.total / sum(measured.values()),
            }
            rows.append(row)
            print(
                f"{preset:7s} {row['batch']:>9s} {str(checkpointing):>5s} {plan.total / MIB:12.1f} "
                f"{sum(measured.values()) / MIB:13.1f} {row['ratio']:6.2f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
