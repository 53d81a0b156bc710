"""The GPU run sheet: one short script that times each stage's step and prints throughput and MFU.

    python eval/bench/gpu.py --out eval/bench/results/gpu.json                  # a CUDA machine, bf16
    python eval/bench/gpu.py --device cpu --preset tiny --steps 2 --num_hidden_layers 2   # the tests' CPU run

On a random model of `--preset` (by default the 7B shape cut to `--num_hidden_layers 8`, about 1.7B
parameters: mid-size, quick to step), after one warm-up, for `--steps` steps each:

- `sft`: AdamW steps of the causal LM on `--batch_size` x `--seq_length` tokens (the step pretraining and SFT
  take), bf16 autocast on CUDA: tokens/s; MFU = 6 x parameters x tokens/s over the peak.
- `reward_model`: AdamW steps of the reward model with the margin ranking loss (-log sigmoid(r_c - r_r - m),
  docs/method.md §5) on chosen/rejected pairs: pairs/s, MFU as above on both sequences.
- `rejection_sampling`: K answers per prompt with the KV cache, each row from its own seed, with each decode
  loop of `align.generation.sample_tokens` (`generate`, `dynamic`, `static`: docs/generation.md): new tokens/s
  of each; MFU = 2 x parameters x tokens/s (the fastest) over the peak (decoding is memory-bound: low).
- `ppo`: `align.ppo.PPOTrainer` iterations (policy, value model, reference, two reward models of the preset):
  samples/s and where the time goes.
- `qlora`: the `sft` step on a 4-bit model (bitsandbytes NF4) with LoRA adapters (peft's QLoRA recipe):
  tokens/s; skipped, and said so, where bitsandbytes is not installed.
- `fsdp`: with `--fsdp_processes N` (default: every CUDA device; none on a CPU), N processes step
  the causal LM sharded with FSDP2 (`align.sharding.shard_model`) on NCCL (gloo on a CPU): tokens/s over all.

The peak is measured in the same run: the best of a few square matmuls (bf16 8192 x 8192 on CUDA, fp32 2048 x
2048 on a CPU), so MFU is relative to what this device reaches on a matmul, not to a datasheet. Record what it
prints in `eval/bench/README.md` with the date and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]


def timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per call of `step`, after one warm-up call."""
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def matmul_peak(device: torch.device) -> float:
    """FLOP/s of the best of 5 square matmuls on `device`."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best = min(timed(lambda: a @ b, 1, device) for _ in range(5))
    return 2 * size**3 / best


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def model_config(args: argparse.Namespace, **extra):
    from align.modeling import AlignLlamaConfig

    overrides = {"num_hidden_layers": args.num_hidden_layers} if args.num_hidden_layers else {}
    return AlignLlamaConfig.from_preset(args.preset, **{"pad_token_id": 0, "eos_token_id": 2, **overrides, **extra})


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def causal_lm_steps(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """AdamW steps of a causal LM on random tokens: tokens/s (trainable parameters only are stepped)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(3, model.config.vocab_size, (args.batch_size, args.seq_length), device=device)

    def step() -> None:
        with autocast(device):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    seconds = timed(step, args.steps, device)
    return {"tokens_per_s": args.batch_size * args.seq_length / seconds, "seconds_per_step": seconds}


def bench_sft(args, device, peak) -> dict:
    from align.modeling import AlignLlamaForCausalLM

    model = AlignLlamaForCausalLM(model_config(args)).to(device).train()
    result = causal_lm_steps(model, args, device)
    return {**result, "parameters": parameters(model), "mfu": 6 * parameters(model) * result["tokens_per_s"] / peak}


def bench_reward_model(args, device, peak) -> dict:
    from align.modeling import AlignLlamaForSequenceClassification

    model = AlignLlamaForSequenceClassification(model_config(args, num_labels=1)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    shape = (args.batch_size, args.seq_length)
    chosen, rejected = (torch.randint(3, model.config.vocab_size, shape, device=device) for _ in range(2))
    margin = torch.full((args.batch_size,), 1.0, device=device)

    def step() -> None:
        with autocast(device):
            scores = model(input_ids=torch.cat([chosen, rejected])).logits[:, 0].float()
        loss = -F.logsigmoid(scores[: args.batch_size] - scores[args.batch_size :] - margin).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    seconds = timed(step, args.steps, device)
    tokens_per_s = 2 * args.batch_size * args.seq_length / seconds
    return {"pairs_per_s": args.batch_size / seconds, "parameters": parameters(model),
            "mfu": 6 * parameters(model) * tokens_per_s / peak}  # fmt: skip


def bench_rejection_sampling(args, device, peak) -> dict:
    from align.generation import sample_tokens
    from align.modeling import AlignLlamaForCausalLM

    model = AlignLlamaForCausalLM(model_config(args)).to(device).eval()
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    prompts = torch.randint(3, model.config.vocab_size, (args.prompts * args.num_samples, args.prompt_length))
    prompts = prompts.to(device)
    new_tokens = [0]
    seeds = list(range(len(prompts)))

    def step(decode: str) -> None:
        out = sample_tokens(
            model,
            prompts,
            torch.ones_like(prompts),
            pad_token_id=0,
            eos_token_id=2,
            max_new_tokens=args.response_length,
            min_new_tokens=args.response_length,
            temperature=1.0,
            row_seeds=seeds,
            decode=decode,
        )  # fmt: skip  (every row decodes the full length)
        new_tokens[0] = out.numel()

    # Each of the decode loops (docs/generation.md); the static one compiles its step in the warm-up call.
    rates = {}
    for decode in ("generate", "dynamic", "static"):
        seconds = timed(lambda: step(decode), args.steps, device)  # noqa: B023 (called within this iteration)
        rates[decode] = new_tokens[0] / seconds
    best = max(rates.values())
    return {"new_tokens_per_s": rates["dynamic"], "rows": len(prompts),
            **{f"{decode}_new_tokens_per_s": rate for decode, rate in rates.items()},
            "mfu": 2 * parameters(model) * best / peak}  # fmt: skip


def bench_ppo(args, device, peak) -> dict:
    from align.data import load_tokenizer
    from align.ppo import PPOConfig
    from align.world import World

    bench = runpy.run_path(str(Path(__file__).resolve().parent / "ppo.py"))  # its random models and PPO timing
    tokenizer = load_tokenizer(ROOT / "data" / "tokenizer")
    layers = {"num_hidden_layers": args.num_hidden_layers} if args.num_hidden_layers else {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = bench["build_models"](bench["bench_model_config"](args.preset, tokenizer, **layers), tokenizer,
                                          folder)  # fmt: skip
        records = [p.to_record() for p in World(seed=0).prompts(args.ppo_batch_size * (args.steps + 1), "train")]
        config = PPOConfig(
            policy=str(paths["policy"]), helpfulness_rm=str(paths["helpfulness_rm"]),
            safety_rm=str(paths["safety_rm"]), output_dir=str(folder / "ppo"), prompts="world",
            batch_size=args.ppo_batch_size, mini_batch_size=args.ppo_batch_size // 4,
            forward_batch_size=args.ppo_batch_size, response_length=args.response_length,
            num_iterations=args.steps + 1, save_steps=10_000,
            mixed_precision="bf16" if device.type == "cuda" else "no",
        )  # fmt: skip
        result = bench["time_ppo"](config, records, args.steps)
    total = sum(result[name] for name in ("time/generation", "time/scoring", "time/update"))
    return {"samples_per_s": result["samples_per_s"],
            **{f"share_{name.split('/')[1]}": result[name] / total
               for name in ("time/generation", "time/scoring", "time/update")}}  # fmt: skip


def bench_qlora(args, device, peak) -> dict:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return {"skipped": "bitsandbytes is not installed (pip install 'align-rlhf[gpu]')"}
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    from align.modeling import AlignLlamaForCausalLM

    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        AlignLlamaForCausalLM(model_config(args)).save_pretrained(tmp)
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
        model = AlignLlamaForCausalLM.from_pretrained(tmp, quantization_config=quantization, device_map=str(device),
                                                      dtype=compute)  # fmt: skip
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, target_modules=targets)).train()
    return causal_lm_steps(model, args, device)


def fsdp_worker(args: argparse.Namespace) -> None:
    """One process of the `fsdp` bench: the causal LM sharded with FSDP2, steps on this process's batch."""
    import torch.distributed as dist

    from align.modeling import AlignLlamaForCausalLM
    from align.sharding import shard_model

    cuda = args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    model = AlignLlamaForCausalLM(model_config(args)).to(device).train()
    shard_model(model, mixed_precision="bf16" if cuda else "no")
    result = causal_lm_steps(model, args, device)
    if dist.get_rank() == 0:
        Path(args.fsdp_out).write_text(json.dumps({**result, "parameters": parameters(model)}))
    dist.barrier()
    dist.destroy_process_group()


def bench_fsdp(args, device, peak) -> dict:
    processes = args.fsdp_processes
    if processes is None:
        processes = torch.cuda.device_count() if device.type == "cuda" else 0
    if processes < 1:  # one CUDA device still checks FSDP2 on NCCL; NCCL refuses two processes on one device
        return {"skipped": "needs a CUDA device, or --fsdp_processes on a CPU"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fsdp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), __file__,
                   *sys.argv[1:], "--fsdp_worker", "--fsdp_out", str(out)]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            return {"failed": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"}
        result = json.loads(out.read_text())
    tokens_per_s = result["tokens_per_s"] * processes  # each process steps its own batch
    return {"processes": processes, "tokens_per_s": tokens_per_s,
            "mfu": 6 * result["parameters"] * tokens_per_s / (peak * processes)}  # fmt: skip


STAGES = {"sft": bench_sft, "reward_model": bench_reward_model, "rejection_sampling": bench_rejection_sampling,
          "ppo": bench_ppo, "qlora": bench_qlora, "fsdp": bench_fsdp}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="7b")
    parser.add_argument("--num_hidden_layers", type=int, default=8, help="cut the preset to this many layers (0: all)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {list(STAGES)}")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_length", type=int, default=1024)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--num_samples", type=int, default=4)
    parser.add_argument("--prompt_length", type=int, default=128)
    parser.add_argument("--response_length", type=int, default=128)
    parser.add_argument("--ppo_batch_size", type=int, default=16)
    parser.add_argument("--fsdp_processes", type=int, default=None)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--fsdp_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fsdp_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fsdp_worker:
        fsdp_worker(args)
        return {}
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown or (args.device == "cuda" and not torch.cuda.is_available()):
        from align.config import exit_with_error

        problem = f"--stages: unknown {sorted(unknown)}, expected some of {list(STAGES)}" if unknown else (
            "--device cuda: no CUDA device here; use --device cpu")  # fmt: skip
        exit_with_error(problem, prog="gpu.py")
    device = torch.device(args.device)
    peak = matmul_peak(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}: matmul peak {peak / 1e12:.2f} TFLOP/s; {args.preset} x {args.num_hidden_layers or 'all'} layers")
    report = {"device": name, "matmul_peak_flops": peak, "torch": torch.__version__, "args": vars(args) | {
        "out": str(args.out)}, "stages": {}}  # fmt: skip
    for stage in args.stages.split(","):
        result = STAGES[stage](args, device, peak)
        report["stages"][stage] = result
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())
        print(f"{stage:20s} {shown}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
