"""Samples/s of PPO iterations (`align.ppo.PPOTrainer`) against TRL's `RLOOTrainer`, in the same run (issue 9).

    python eval/bench/ppo.py --preset small --batch_size 32 --mini_batch_size 8 --response_length 32

Same random model (policy and reference), the same two reward models, the same world prompts, batch of
rollouts per iteration, gradient steps per iteration (batch / mini-batch), response length and sampling.
TRL's RLOO is set to generate `batch_size` completions at a time (`steps_per_generation` = batch /
mini-batch, 2 completions per prompt, the least it allows) and takes one gradient step per mini-batch, like
ours. Each runs `--iterations` iterations after one warm-up iteration. Ours runs twice: with the paper's
separate value model (the default) and with `shared_value_head` (a value head on the policy's trunk). Prints
the rates, the ratios to TRL (target >= 1.0) and where our time goes (generation, scoring, update).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import datasets
import torch
import trl
from transformers import TrainerCallback

from align.data import load_tokenizer
from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM, AlignLlamaForSequenceClassification
from align.ppo import PPOConfig, PPOTrainer
from align.world import World


def bench_model_config(preset: str, tokenizer, **overrides) -> AlignLlamaConfig:
    """`preset` with `tokenizer`'s vocabulary (rounded up to a multiple of 64) and padding, and a scalar head."""
    vocabulary = -(-len(tokenizer) // 64) * 64
    return AlignLlamaConfig.from_preset(
        preset, **{"vocab_size": vocabulary, "pad_token_id": tokenizer.pad_token_id, "num_labels": 1, **overrides}
    )


def build_models(config: AlignLlamaConfig, tokenizer, folder: Path) -> dict[str, Path]:
    """A random policy and two random reward models of `config` (`bench_model_config`), saved like real
    checkpoints with `tokenizer`."""
    torch.manual_seed(0)
    paths = {}
    for name, model_class in (
        ("policy", AlignLlamaForCausalLM),
        ("helpfulness_rm", AlignLlamaForSequenceClassification),
        ("safety_rm", AlignLlamaForSequenceClassification),
    ):
        model_class(config).save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        paths[name] = folder / name
    return paths


def time_ppo(config: PPOConfig, prompts: list[dict], iterations: int) -> dict:
    """Samples/s of `iterations` PPO iterations of `config` after one warm-up iteration, and the seconds spent
    generating, scoring and updating."""
    trainer = PPOTrainer.from_config(config, prompts)
    trainer.step()  # warm-up
    timings = {"time/generation": 0.0, "time/scoring": 0.0, "time/update": 0.0}
    start = time.perf_counter()
    for _ in range(iterations):
        metrics = trainer.step()
        for name in timings:
            timings[name] += metrics[name]
    elapsed = time.perf_counter() - start
    return {"samples_per_s": config.batch_size * iterations / elapsed, "seconds": elapsed, **timings}


def run_ours(paths, tokenizer, prompts, args, folder: Path, shared_value_head: bool) -> dict:
    config = PPOConfig(
        policy=str(paths["policy"]),
        helpfulness_rm=str(paths["helpfulness_rm"]),
        safety_rm=str(paths["safety_rm"]),
        output_dir=str(folder / ("ours_shared" if shared_value_head else "ours")),
        prompts="world",  # the world's prompts, passed in below
        shared_value_head=shared_value_head,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        response_length=args.response_length,
        num_iterations=args.iterations + 1,
        forward_batch_size=args.batch_size,
        save_steps=10_000,
    )
    return time_ppo(config, prompts, args.iterations)


class _Timer(TrainerCallback):
    """Start the clock after the warm-up iteration's optimizer steps."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps, self.start = warmup_steps, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup_steps:
            self.start = time.perf_counter()


def run_trl(paths, tokenizer, prompts, args, folder: Path) -> dict:
    steps_per_iteration = args.batch_size // args.mini_batch_size
    config = trl.RLOOConfig(
        output_dir=str(folder / "trl"),
        per_device_train_batch_size=args.mini_batch_size,
        steps_per_generation=steps_per_iteration,
        num_generations=2,
        max_completion_length=args.response_length,
        max_steps=(args.iterations + 1) * steps_per_iteration,
        learning_rate=1e-6,
        beta=0.01,
        temperature=1.0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        disable_tqdm=True,
        gradient_checkpointing=False,  # TRL turns it on by default; ours does not recompute either
    )
    timer = _Timer(steps_per_iteration)
    trainer = trl.RLOOTrainer(
        model=AlignLlamaForCausalLM.from_pretrained(paths["policy"]),
        reward_funcs=[
            AlignLlamaForSequenceClassification.from_pretrained(paths[n]) for n in ("helpfulness_rm", "safety_rm")
        ],
        args=config,
        train_dataset=datasets.Dataset.from_list([{"prompt": p.messages} for p in prompts]),
        processing_class=tokenizer,
        reward_processing_classes=[tokenizer, tokenizer],
        callbacks=[timer],
    )
    trainer.train()
    elapsed = time.perf_counter() - timer.start
    return {"samples_per_s": args.batch_size * args.iterations / elapsed, "seconds": elapsed}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--tokenizer", default="data/tokenizer")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--mini_batch_size", type=int, default=8)
    parser.add_argument("--response_length", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer(args.tokenizer)
    prompts = World(seed=0).prompts(args.batch_size * (args.iterations + 1), "train")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = build_models(bench_model_config(args.preset, tokenizer), tokenizer, folder)
        records = [p.to_record() for p in prompts]
        ours = run_ours(paths, tokenizer, records, args, folder, shared_value_head=False)
        shared = run_ours(paths, tokenizer, records, args, folder, shared_value_head=True)
        theirs = run_trl(paths, tokenizer, prompts, args, folder)
    report = {
        "ours": ours,
        "ours_shared_value_head": shared,
        "trl_rloo": theirs,
        "ratio": ours["samples_per_s"] / theirs["samples_per_s"],
        "ratio_shared_value_head": shared["samples_per_s"] / theirs["samples_per_s"],
        "threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "versions": {"torch": torch.__version__, "trl": trl.__version__},
        "args": vars(args) | {"json": str(args.json)},
    }
    print(
        f"TRL RLOO {theirs['samples_per_s']:.2f} samples/s ({args.preset}, batch {args.batch_size}, "
        f"mini-batch {args.mini_batch_size}, {args.response_length} tokens)"
    )
    for name, run, ratio in (
        ("align PPO (value model)", ours, report["ratio"]),
        ("align PPO (shared value head)", shared, report["ratio_shared_value_head"]),
    ):
        total = run["time/generation"] + run["time/scoring"] + run["time/update"]
        shares = ", ".join(
            f"{n.split('/')[1]} {run[n] / total:.0%}" for n in ("time/generation", "time/scoring", "time/update")
        )
        print(f"{name}: {run['samples_per_s']:.2f} samples/s, ratio {ratio:.2f}x; time: {shares}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
