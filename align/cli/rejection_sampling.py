"""Best-of-K rejection sampling, then fine-tuning on the kept answers (docs/method.md §6;
docs/stages/rejection-sampling.md) with `align.rejection_sampling` and `align.sft`.

    align rejection-sampling --config recipes/configs/rejection_sampling/world_small.yaml
    accelerate launch --num_processes 8 -m align rejection-sampling --config ... --num_samples 32
    python recipes/rejection_sampling.py --config recipes/configs/rejection_sampling/world_small.yaml  # script

Samples K answers per prompt (sharded over the processes, resumable), keeps the best by the gated reward,
writes `<output_dir>/kept.jsonl` and `<output_dir>/best_of_k.{json,png}` (best and median reward against K),
then fine-tunes the policy on the kept answers pooled with earlier rounds' (`pool`) into `<output_dir>/sft/final`.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from accelerate import PartialState  # noqa: E402

from align.checkpoint import EXPORT_LLAMA_HELP, export_llama  # noqa: E402
from align.config import ONE_LINE_ERRORS, end_processes, exit_with_error, parse_config  # noqa: E402
from align.io import read_jsonl  # noqa: E402
from align.rejection_sampling import (  # noqa: E402
    RejectionSamplingConfig,
    best_of_k_curve,
    finetune_settings,
    run_rejection_sampling,
)
from align.sft import SFTConfig, sft  # noqa: E402


@dataclass
class RecipeConfig(RejectionSamplingConfig):
    """Rejection sampling, then SFT on the kept answers."""

    finetune: bool = field(default=True, metadata={"help": "fine-tune the policy on the kept answers"})
    pool: str | None = field(default=None, metadata={"help": "comma-separated kept.jsonl files of earlier rounds"})
    export_llama: str | None = field(default=None, metadata={"help": EXPORT_LLAMA_HELP})


def write_report(kept: Path) -> None:
    curve = best_of_k_curve(read_jsonl(kept))
    (kept.parent / "best_of_k.json").write_text(json.dumps(curve, indent=2) + "\n")
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(curve["k"], curve["max"], marker="o", label="best of k")
    axis.plot(curve["k"], curve["median"], marker="o", label="median of k")
    axis.set_xlabel("k samples")
    axis.set_ylabel("gated reward")
    axis.legend()
    figure.tight_layout()
    figure.savefig(kept.parent / "best_of_k.png", dpi=120)
    print("best-of-k reward:", ", ".join(f"k={k}: {v:.3f}" for k, v in zip(curve["k"], curve["max"])))


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    config = parse_config(RecipeConfig, argv, prog, description=__doc__)
    try:
        kept = run_rejection_sampling(config)
        if PartialState().is_main_process:  # the state run_rejection_sampling set up
            write_report(kept)
        if config.finetune:
            sources = ",".join([str(kept), *(config.pool.split(",") if config.pool else [])])
            final = sft(
                SFTConfig(
                    model=config.policy,
                    output_dir=str(Path(config.output_dir) / "sft"),
                    dataset=sources,
                    **finetune_settings(config, PartialState().num_processes),
                )
            )
            print(f"fine-tuned policy: {final}")
            if config.export_llama and PartialState().is_main_process:
                print(f"plain Llama directory: {export_llama(final, config.export_llama)}")
    except ONE_LINE_ERRORS as error:
        exit_with_error(str(error), prog)
    print(f"kept answers: {kept}")
    end_processes()


if __name__ == "__main__":
    main()
