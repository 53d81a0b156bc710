"""A round's `collect` stage: this round's new preference pairs, sampled from the previous policy and labelled
by the world's annotator (the demo), read from the user's annotated files (`helpfulness_pairs`, `{round}` in the
path), or from the labelled comparison batch the round wrote for annotators (`align.annotation`), which may be
labelled by an AI judge (`annotator`, `align.ai_feedback`)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelerate.utils import gather_object

from ..ai_feedback import HUMAN
from ..checkpoint import is_done
from ..io import atomic_write_jsonl, read_jsonl
from ..sources import describe_source
from .config import ROUND_STAGE_MARKER, TARGETS, AnnotationNeeded

if TYPE_CHECKING:
    from .runner import Rounds


def annotation_paths(rounds: Rounds, n: int) -> tuple[Path, Path]:
    """(the comparison batch to label, where its labelled copy goes) of round `n`."""
    folder = rounds.stage_dir(n, "collect")
    return folder / "to_annotate.jsonl", folder / "annotated.jsonl"


def wait_for_annotations(rounds: Rounds, n: int, policy: Path) -> None:
    """Round `n` on real data without annotated files: write its comparison batch once, and stop (every
    process) until the labelled copy is in place."""
    batch, labelled = annotation_paths(rounds, n)
    if is_done(rounds.stage_dir(n, "collect"), ROUND_STAGE_MARKER) or labelled.is_file():
        return
    if rounds.processes.is_main_process and not batch.is_file():
        from ..annotation import write_annotation_batch
        from ..data import load_tokenizer
        from ..modeling import load_causal_lm
        from ..prompts import load_prompts

        print(f"[round {n}] writing the comparison batch to annotate ...", flush=True)
        prompts = load_prompts(rounds.config.prompts, world_seed=rounds.config.world_seed)
        if len(prompts) > rounds.config.pairs_per_round:
            prompts = random.Random(rounds.config.seed * 1000 + n).sample(prompts, rounds.config.pairs_per_round)
        model = load_causal_lm(policy, "policy").to(rounds.processes.device)
        temperatures = tuple(float(t) for t in rounds.config.annotation_temperatures.split(","))
        write_annotation_batch(model, load_tokenizer(policy), prompts, batch, temperatures=temperatures,
                               max_new_tokens=rounds.config.annotation_max_new_tokens, seed=rounds.config.seed + n)  # fmt: skip
    if rounds.config.annotator != HUMAN:  # AI feedback: labelled here, and the round goes on
        if rounds.processes.is_main_process:
            from ..ai_feedback import annotate_batch, load_annotator

            print(f"[round {n}] labelling the comparison batch with {rounds.config.annotator} ...", flush=True)
            annotator = load_annotator(
                rounds.config.annotator, rounds.processes.device, rounds.config.annotator_template
            )
            counts = annotate_batch(batch, labelled, annotator)
            print(f"[round {n}] {counts['labelled']} comparisons labelled by {counts['annotated_by']}; "
                  f"unparsable: {counts['unparsable'] or 'none'}", flush=True)  # fmt: skip
        rounds.processes.wait_for_everyone()
        return
    rounds.processes.wait_for_everyone()
    raise AnnotationNeeded(
        f"round {n} needs labels: fill 'choice' (a/b), 'strength' and the safety labels in {batch}, save it as "
        f"{labelled}, then run the same command again"
    )


def require_enough_pairs(rounds: Rounds, n: int, collected: dict[str, Any]) -> None:
    """AnnotationNeeded (exit status 3, nothing trained) when the round collected fewer usable pairs for a data
    set than `min_new_pairs`; the collection is undone, so the same command collects again once the labels
    are fixed. Decided on every process from the collection's record."""
    short = {t: c for t, c in collected.get("pairs", {}).items() if c < rounds.config.min_new_pairs}
    if not short:
        return
    rounds.processes.wait_for_everyone()
    if rounds.processes.is_main_process:
        (rounds.stage_dir(n, "collect") / ROUND_STAGE_MARKER).unlink(missing_ok=True)
    rounds.processes.wait_for_everyone()
    counts = ", ".join(f"{count} {target}" for target, count in short.items())
    unparsable = sum(collected.get("unparsable", {}).values())
    why = f" ({unparsable} comparisons left unlabelled: the judge's answers did not parse)" if unparsable else ""
    _, labelled = annotation_paths(rounds, n) if collected.get("source") == "annotated comparison batch" else (0, None)
    fix = (f"fix or add labels in {labelled} (or delete it to label the batch again)" if labelled else
           "give more pairs")  # fmt: skip
    raise AnnotationNeeded(
        f"round {n}: only {counts} usable new pairs, fewer than min_new_pairs={rounds.config.min_new_pairs}{why}; "
        f"nothing was trained: {fix}, then run the same command again"
    )


def round_options(rounds: Rounds) -> dict[str, Any]:
    """The rounds options a round's collection depends on (recorded with it; a rerun says when they changed)."""
    config = rounds.config
    if config.pair_source == "files":
        return {}  # nothing to choose
    if config.pair_source == "comparison batch":
        return {"pairs_per_round": config.pairs_per_round, "annotator": config.annotator,
                "annotation_temperatures": config.annotation_temperatures,
                "annotation_max_new_tokens": config.annotation_max_new_tokens, "seed": config.seed}  # fmt: skip
    return {"pairs_per_round": config.pairs_per_round, "collect_samples": config.collect_samples,
            "collect_temperature": config.collect_temperature, "collect_greedy": config.collect_greedy,
            "seed": config.seed}  # fmt: skip


def run(rounds: Rounds, n: int, policy: Path, folder: Path) -> dict[str, Any]:
    """This round's new pairs: sampled from `policy` (each process samples its share of every data set's
    prompts, each answer from its own seed) and labelled in the world by the main process, the user's
    annotated files, or the labelled comparison batch (read by the main process). The facts are the main
    process's."""
    folder.mkdir(parents=True, exist_ok=True)
    from ..data import load_preferences

    from_files = rounds.config.pair_source == "files"
    annotated = rounds.config.pair_source == "comparison batch"
    if (from_files or annotated) and not rounds.processes.is_main_process:
        return {}
    if from_files:
        counts, sources = {}, {}
        for target in TARGETS:
            source = getattr(rounds.config, f"{target}_pairs").format(round=n)
            file_format = rounds.config.pairs_format or getattr(rounds.config, f"{target}_format")
            # Saved with the data's own margins only: the reward-model update applies its margin scheme.
            pairs = load_preferences(source, format=file_format, target=target, margin_scheme=None)
            atomic_write_jsonl(folder / f"{target}.jsonl", pairs.to_list())
            counts[target], sources[f"{target}_pairs"] = len(pairs), [describe_source(source)]
        return {"pairs": counts, "source": "files", "parent": str(policy), "data_sources": sources}
    if annotated:
        from ..annotation import read_annotations

        _, labelled = annotation_paths(rounds, n)
        pairs = read_annotations(labelled, source=f"round {n} annotations")
        counts = {}
        for target in TARGETS:
            rows = (
                load_preferences(pairs[target], format="trl", margin_scheme=None).to_list()
                if pairs[target]
                else []
            )
            atomic_write_jsonl(folder / f"{target}.jsonl", rows)
            counts[target] = len(rows)
        records = read_jsonl(labelled)
        annotators = sorted({str(r["annotator"]) for r in records if r.get("annotator")})
        unparsable = Counter(r["unparsable"] for r in records if r.get("unparsable"))
        return {"pairs": counts, "source": "annotated comparison batch", "parent": str(policy),
                "annotated_by": annotators or ["not recorded"], "unparsable": dict(unparsable),
                "data_sources": {"annotations": [describe_source(str(labelled))]}}  # fmt: skip
    from ..data import load_tokenizer
    from ..modeling import load_causal_lm
    from ..world import TARGET_PROMPT_MIX, World
    from ..world.collection import label_pairs, sample_answers

    world = World(seed=rounds.config.world_seed)
    model = load_causal_lm(policy, "policy").to(rounds.processes.device)
    tokenizer = load_tokenizer(policy)
    processes, rank = rounds.processes.num_processes, rounds.processes.process_index
    seeds = {target: 1000 * n + index + rounds.config.seed for index, target in enumerate(TARGETS)}
    prompts, answers = {}, {}
    for target in TARGETS:
        prompts[target] = world.prompts(rounds.config.pairs_per_round, "train", seed=seeds[target],
                                        mix=TARGET_PROMPT_MIX[target])  # fmt: skip
        mine = prompts[target][rank::processes]
        samples = sample_answers(model, tokenizer, mine, rounds.config.collect_samples,
                                 temperature=rounds.config.collect_temperature, seed=seeds[target],
                                 greedy_first=rounds.config.collect_greedy)  # fmt: skip
        answers[target] = {prompt.id: pair for prompt, pair in zip(mine, samples)}
    if processes > 1:
        parts = gather_object([answers])
        answers = {target: {k: v for part in parts for k, v in part[target].items()} for target in TARGETS}
    if not rounds.processes.is_main_process:
        return {}
    counts = {}
    for target in TARGETS:
        pairs = label_pairs(world, prompts[target], answers[target], target, seeds[target])
        atomic_write_jsonl(folder / f"{target}.jsonl", pairs)
        counts[target] = len(pairs)
    return {"pairs": counts, "source": "world annotator", "parent": str(policy)}
