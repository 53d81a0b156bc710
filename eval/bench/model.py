"""Speed and memory of `AlignLlamaForCausalLM` against transformers' `LlamaForCausalLM`, in one run.

Both models get the same config and the same weights. Three workloads:
  train     forward + backward on (batch, seq) tokens          -> tokens/s
  generate  greedy generation with KV cache, no early stop     -> new tokens/s
  memory    activation memory of one train step: the bytes autograd keeps for backward (unique storages,
            deterministic), and the peak memory of the step, each model alone in a fresh subprocess
            (CUDA: max_memory_allocated; CPU: the process's peak RSS, reset through /proc/self/clear_refs
            just before the step, minus its RSS then; this one moves by a few % between runs on CPU)
Timings interleave the two models after a warm-up; each speed is reported from the median and from the best
of `--repeats` runs (on a busy or small CPU machine the best is the steadier estimate of the same work).
Prints every ratio as ours / transformers (speed: higher is better; memory: lower is better).

    python eval/bench/model.py --preset small --batch 8 --seq 512
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import LlamaForCausalLM

from align.modeling import AlignLlamaConfig, AlignLlamaForCausalLM, to_llama_config


def build(which: str, args: argparse.Namespace):
    """The model named `which` ("align" or "transformers") with the seed-0 weights of our model."""
    config = AlignLlamaConfig.from_preset(args.preset, eos_token_id=None)
    torch.manual_seed(0)
    ours = AlignLlamaForCausalLM(config)
    if which == "align":
        model = ours
    else:
        model = LlamaForCausalLM(to_llama_config(config))
        model.load_state_dict(ours.state_dict())
    return model.to(device=args.device, dtype=getattr(torch, args.dtype))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step(model, ids) -> None:
    model(ids, labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)


def generate(model, prompt, new_tokens: int) -> None:
    model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True)


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def measure_speed(args: argparse.Namespace) -> dict:
    models = {name: build(name, args) for name in ("align", "transformers")}
    vocab = models["align"].config.vocab_size
    gen = torch.Generator().manual_seed(1)
    train_ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen).to(args.device)
    prompt = torch.randint(0, vocab, (args.batch, args.prompt), generator=gen).to(args.device)
    results = {}
    workloads = {
        "train_tokens_per_s": (lambda m: train_step(m.train(), train_ids), args.batch * args.seq),
        "generate_tokens_per_s": (lambda m: generate(m.eval(), prompt, args.new_tokens), args.batch * args.new_tokens),
    }
    for metric, (work, tokens) in workloads.items():
        seconds = {name: [] for name in models}
        for model in models.values():  # warm-up: allocator, kernels, lazy inits
            work(model)
        for _ in range(args.repeats):
            for name, model in models.items():
                seconds[name].append(timed(lambda model=model, work=work: work(model), args.device))
        results[metric] = {name: tokens / statistics.median(s) for name, s in seconds.items()}
        results[metric + "_best"] = {name: tokens / min(s) for name, s in seconds.items()}
        for key in (metric, metric + "_best"):
            print(f"  {key}: " + ", ".join(f"{n} {v:,.0f}" for n, v in results[key].items()), flush=True)
    return results


def _rss_kib(field: str) -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def saved_activation_bytes(model, ids) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward pass with loss."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(ids, labels=ids).loss
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    del loss
    return sum(size for pointer, size in storages.items() if pointer not in parameters)


def _peak_memory_child(which: str, args: argparse.Namespace, queue) -> None:
    model = build(which, args).train()
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq)).to(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        train_step(model, ids)
        torch.cuda.synchronize()
        queue.put(torch.cuda.max_memory_allocated() - before)
    else:
        # ru_maxrss survives exec (it would report the parent's peak), so read the per-process high-water mark,
        # reset to the current RSS by writing 5 to clear_refs (Linux >= 4.0).
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kib("VmRSS")
        train_step(model, ids)
        queue.put((_rss_kib("VmHWM") - before) * 1024)


def measure_memory(args: argparse.Namespace) -> dict:
    context = mp.get_context("spawn")
    peaks = {}
    for which in ("align", "transformers"):
        queue = context.Queue()
        child = context.Process(target=_peak_memory_child, args=(which, args, queue))
        child.start()
        peaks[which] = queue.get()
        child.join()
    saved = {}
    for which in ("align", "transformers"):
        model = build(which, args).train()
        saved[which] = saved_activation_bytes(
            model, torch.zeros(args.batch, args.seq, dtype=torch.long).to(args.device)
        )
        del model
    for name, values in (("saved_activation_bytes", saved), ("train_step_peak_bytes", peaks)):
        print(f"  {name}: " + ", ".join(f"{n} {v / 2**20:,.1f} MiB" for n, v in values.items()), flush=True)
    return {"saved_activation_bytes": saved, "train_step_peak_bytes": peaks}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512, help="train sequence length")
    parser.add_argument("--prompt", type=int, default=64, help="generation prompt length")
    parser.add_argument("--new_tokens", type=int, default=128, help="generated tokens per row")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    env = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(f"preset={args.preset} batch={args.batch} seq={args.seq} dtype={args.dtype} {env}", flush=True)
    results = {**measure_speed(args), **measure_memory(args)}
    ratios = {metric: values["align"] / values["transformers"] for metric, values in results.items()}
    print("ratio ours / transformers:")
    for metric, ratio in ratios.items():
        better = "lower is better" if "bytes" in metric else "higher is better"
        print(f"  {metric:24s} {ratio:6.3f}   ({better})")
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "env": env, "results": results, "ratios": ratios}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    sys.exit(main() and 0)
