"""Per-process peak memory of a sharded PPO step on 1 and 2 processes, next to `align.plan` for the same layout.

    python eval/bench/ppo_memory.py [--preset small] [--out eval/bench/results/ppo_memory_cpu.json]

A random policy, value model and two reward models of `--preset` (fp32) train with `fsdp: true` and
`shard_frozen: true` (on one process there is nothing to shard: the models are whole). Each process measures,
above its resident memory before any model was loaded (its process group already up): what it holds after a
warm-up step (weights, gathered layers, AdamW state) and the peak of the next step (rollout and update),
the kernel's peak resident memory (`align.plan.resident_peak`; Linux; glibc's mmap threshold fixed at 64 KiB,
so that freed tensors leave resident memory at once). The plan is `plan_memory` with the run's own numbers: gpus = processes,
strategy fsdp, frozen models sharded, rollouts of `forward_batch_size` rows x (longest prompt +
response_length) tokens, updates of mini_batch_size / processes rows, fp32, torch's CPU "math" attention. The
ratio plan / measured peak is the check (the issue's target: within 20%).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH_PPO = runpy.run_path(str(Path(__file__).resolve().parent / "ppo.py"))  # its random models
MIB = 2**20


def worker(args: argparse.Namespace) -> None:
    """One process of the launched run: writes its measurements to `<out>.rank<N>.json`."""
    from accelerate import PartialState

    from align.plan import resident_bytes, resident_peak, settle_memory
    from align.ppo import PPOConfig, PPOTrainer

    records = json.loads((args.models / "prompts.json").read_text())
    # What the process holds before any model is not counted: the process group (gloo's buffers and threads).
    state = PartialState(cpu=not torch.cuda.is_available())
    state.wait_for_everyone()
    settle_memory()
    baseline = resident_bytes()
    config = PPOConfig(
        policy=str(args.models / "policy"), helpfulness_rm=str(args.models / "helpfulness_rm"),
        safety_rm=str(args.models / "safety_rm"), output_dir=str(args.models / f"run{args.processes}"),
        prompts="world", batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
        response_length=args.response_length, forward_batch_size=args.forward_batch_size, num_iterations=3,
        save_steps=10_000, fsdp=True, shard_frozen=True, resume=False,
    )  # fmt: skip
    trainer = PPOTrainer.from_config(config, records)
    trainer.step()  # warm-up: AdamW's state exists from the first step on
    settle_memory()
    held = resident_bytes() - baseline
    peak = resident_peak(trainer.step) - baseline
    rank = trainer.accelerator.process_index
    Path(f"{args.out}.rank{rank}.json").write_text(json.dumps({"held": held, "peak": peak}))
    trainer.accelerator.wait_for_everyone()


def planned(args: argparse.Namespace, processes: int, prompt_length: int) -> dict:
    from align.plan import PlanConfig, plan_memory

    plan = plan_memory(
        PlanConfig(
            preset=args.preset, stage="ppo", gpus=processes, strategy="fsdp", shard_frozen=True, dtype="fp32",
            micro_batch_size=args.mini_batch_size // processes, prompt_length=prompt_length,
            response_length=args.response_length,
            forward_batch_size=min(args.forward_batch_size, args.batch_size // processes),
            activation_checkpointing=False, attention="math", gpu_memory_gib=1e6,
        ),
        model_config=model_config(args),
    )  # fmt: skip
    c = plan.components
    return {"total": plan.total, "held": c["weights"] + c["gathered layers"] + c["optimizer state"], **c}


def model_config(args: argparse.Namespace):
    from align.data import load_tokenizer

    return BENCH_PPO["bench_model_config"](args.preset, load_tokenizer(args.tokenizer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--tokenizer", default=str(ROOT / "data" / "tokenizer"))
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--mini_batch_size", type=int, default=8)
    parser.add_argument("--forward_batch_size", type=int, default=8)
    parser.add_argument("--response_length", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("eval/bench/results/ppo_memory_cpu.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from align.data import load_tokenizer
    from align.generation import chat_prompt_texts
    from align.world import World

    tokenizer = load_tokenizer(args.tokenizer)
    records = [p.to_record() for p in World(seed=0).prompts(args.batch_size * 3, "train")]
    texts = chat_prompt_texts(tokenizer, [r["prompt"] for r in records])
    prompt_length = max(len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        BENCH_PPO["build_models"](model_config(args), tokenizer, models)
        (models / "prompts.json").write_text(json.dumps(records))
        print(f"{'processes':>9s} {'planned held':>13s} {'measured held':>14s} {'planned peak':>13s} "
              f"{'measured peak':>14s} {'peak ratio':>10s}  (MiB per process)")  # fmt: skip
        for processes in (1, 2):
            out = models / f"measured{processes}"
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), __file__,
                       *sys.argv[1:], "--worker", "--models", str(models), "--processes", str(processes),
                       "--out", str(out)]  # fmt: skip
            # A fixed mmap threshold: glibc otherwise raises it after the first large free, and freed tensors then
            # stay in its heap, counted as resident (like a CUDA caching allocator's reserved memory; the plan is
            # of what is allocated).
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"ppo_memory: the {processes}-process run failed:\n{done.stderr[-3000:]}")
            measured = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(processes)]
            plan = planned(args, processes, prompt_length)
            peak = max(m["peak"] for m in measured)
            held = max(m["held"] for m in measured)
            row = {"processes": processes, "planned": plan, "measured": measured, "ratio": plan["total"] / peak,
                   "held_ratio": plan["held"] / held}  # fmt: skip
            rows.append(row)
            print(f"{processes:9d} {plan['held'] / MIB:13.1f} {held / MIB:14.1f} {plan['total'] / MIB:13.1f} "
                  f"{peak / MIB:14.1f} {row['ratio']:10.2f}")  # fmt: skip
    report = {"preset": args.preset, "prompt_length": prompt_length, "args": {k: str(v) for k, v in vars(args).items()},
              "rows": rows, "torch": torch.__version__}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
