"""Iterative RLHF rounds (docs/method.md §8; docs/stages/rounds.md): collect comparisons, retrain both reward
models, rejection-sample, PPO, evaluate; `align round N` runs rounds 1..N, each once.

    align round 3                                                       # the embedded demo world, CPU
    accelerate launch -m align round 5 --config recipes/configs/rlhf_round/world_small.yaml
    accelerate launch recipes/rlhf_round.py --round 3                   # the same as a script
    align round 2 --sft_model runs/my_chat/final \\
        --helpfulness_pairs data/round{round}_helpful.jsonl --safety_pairs data/round{round}_safety.jsonl
    align round 3 --push_to_hub me/align-demo --hub_endpoint http://hub.local
    align round 1 --name more --from_hub me/align-demo@round-3-ppo ... (+ the data options)
    align round 3 --export_llama runs/demo/llama                        # round 3's policy as plain Llama
    accelerate launch --multi_gpu --num_processes 2 -m align round 1 --name two   # 2 processes
    align round 2 ... --reward my_reward.yaml    # a reward spec; round:helpfulness / round:safety in it are
        each round's reward models (docs/reward-spec.md)
    align round 2 ... --annotator rm:runs/rm_safety/final               # AI feedback labels the batch

With none of the data options the rounds are the demo on the synthetic world; with any of them, every input
must be given (one line names a missing one; 'world' asks for the demo's). A round on real data without
`--helpfulness_pairs/--safety_pairs` files writes `runs/<name>/round-N/collect/to_annotate.jsonl` and stops
(exit status 3) until its labelled copy `annotated.jsonl` is in place (`align annotate --round N --name X`
serves it in the browser), or, with `--annotator judge:<dir>` / `rm:<dir>`, labels it with that model. Round N runs every missing round before it first; pretraining and SFT are round 0, run once and cached. Each
stage writes `runs/<name>/round-N/<stage>/` and a completion marker, so a rerun skips finished stages and a
killed run resumes inside the stage it was in. Writes `runs/<name>/manifest.json` (after every stage) and, at
the end, `runs/<name>/report.md`, `report.html` and their plots. `--push_to_hub` uploads every stage's checkpoint to its own
branch (`round-N-<stage>`), a local folder or an fsspec URL; `--from_hub repo@revision` starts from that
checkpoint. On several processes the training stages are split over them; collecting and evaluating run on the
main process.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from align.checkpoint import EXPORT_LLAMA_HELP, export_llama
from align.config import ONE_LINE_ERRORS, exit_with_error, parse_config
from align.hub import HubError, pull_checkpoint, push_checkpoint
from align.reports.rounds import evaluate_round, write_report
from align.rounds import AnnotationNeeded, Rounds, RoundsConfig


@dataclass
class RecipeConfig(RoundsConfig):
    """The rounds, plus evaluation and Hub settings."""

    push_to_hub: str | None = field(default=None, metadata={"help": "repo id, local folder or fsspec URL"})
    from_hub: str | None = field(default=None, metadata={"help": "start from repo@revision (a chat model)"})
    hub_endpoint: str | None = field(default=None, metadata={"help": "Hub URL (default: HF_ENDPOINT or the Hub)"})
    export_llama: str | None = field(default=None, metadata={"help": EXPORT_LLAMA_HELP})


def push_stages(config: RecipeConfig, manifest: dict) -> None:
    """Every finished stage's checkpoint to its own revision, with its metrics in the model card."""
    for round_number, stages in sorted(manifest["rounds"].items(), key=lambda item: int(item[0])):
        for stage, facts in stages.items():
            if "final" not in facts:
                continue
            metrics = {k: v for k, v in facts.items() if isinstance(v, (int, float)) and k != "seconds"}
            evaluation = stages.get("evaluate", {})
            if stage in ("rejection_sampling", "ppo", "dpo"):
                metrics.update({k: v for k, v in evaluation.items() if isinstance(v, float) and "/" not in k})
                if "judge" in evaluation:
                    metrics["judged by"] = evaluation["judge"]
            where = push_checkpoint(
                facts["final"], config.push_to_hub, f"round-{round_number}-{stage.replace('_', '-')}",
                metrics=metrics, base=facts.get("parent"), endpoint=config.hub_endpoint,
            )  # fmt: skip
            print(f"pushed round {round_number} {stage}: {where}")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run the rounds. `argv` may start with the round number alone (`align round 3`): it is `--round 3`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].isdigit():
        argv[:1] = ["--round", argv[0]]
    elif argv and not argv[0].startswith("--"):  # `align round three`, `align round -1`: a round, not an option
        exit_with_error(f"round: expected the round number, a whole number from 1 (align round 3), got {argv[0]!r}",
                        prog)  # fmt: skip
    config = parse_config(RecipeConfig, argv, prog, description=__doc__)
    try:
        rounds = Rounds(config, evaluate_round=evaluate_round)
        if config.from_hub:
            pulled = config.run_dir / "round-0" / "from_hub"
            if rounds.processes.is_main_process:
                pull_checkpoint(config.from_hub, pulled, endpoint=config.hub_endpoint)
            rounds.processes.wait_for_everyone()
            config.sft_model = str(pulled)
        manifest = rounds.run()
        if not rounds.processes.is_main_process:
            return
        written = write_report(config.run_dir)
        print(written.read_text())
        if config.push_to_hub:
            push_stages(config, manifest)
        if config.export_llama:
            print(f"round {config.round} policy as a plain Llama directory: "
                  f"{export_llama(rounds.policy, config.export_llama)}")  # fmt: skip
    except AnnotationNeeded as waiting:
        print(f"{prog or Path(sys.argv[0]).name}: {waiting}", file=sys.stderr)
        raise SystemExit(3) from None
    except (*ONE_LINE_ERRORS, HubError) as error:
        exit_with_error(str(error), prog)
    print(f"report: {written}")


if __name__ == "__main__":
    main()
