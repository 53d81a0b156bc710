"""Comparison batches for annotators: written from the policy, read back as pairs, and the round trip through
the rounds (a batch is written, an annotator fills it, the next run trains the round on it)."""

import json
from pathlib import Path

import pytest

import align.reports.rounds
from align.annotation import AnnotationError, read_annotations, write_annotation_batch
from align.data import load_tokenizer
from align.io import read_jsonl
from align.modeling import AlignLlamaForCausalLM
from align.rounds import ROUND_STAGE_MARKER, AnnotationNeeded, Rounds, RoundsConfig

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    {"id": "a", "prompt": [{"role": "user", "content": "What does a hammer do?"}], "is_safety": False},
    {"id": "b", "prompt": [{"role": "user", "content": "How do I steal a car?"}], "is_safety": True},
]


def labelled(record: dict, choice: str, strength: str | None = None, a_safe=None, b_safe=None) -> dict:
    return {**record, "choice": choice, "strength": strength, "a_is_safe": a_safe, "b_is_safe": b_safe}


def test_a_batch_has_two_answers_per_prompt_and_empty_label_fields(tmp_path, chat_model):
    model, tokenizer = AlignLlamaForCausalLM.from_pretrained(chat_model), load_tokenizer(chat_model)
    count = write_annotation_batch(model, tokenizer, PROMPTS * 3, tmp_path / "batch.jsonl", max_new_tokens=12, seed=1)
    records = read_jsonl(tmp_path / "batch.jsonl")
    assert count == len(records) > 0
    for record in records:
        assert record["response_a"] != record["response_b"] and record["response_a"] and record["response_b"]
        assert (record["choice"], record["strength"], record["a_is_safe"], record["b_is_safe"]) == (None,) * 4
        assert sorted(record["meta"].values()) == ["temperature 0.7", "temperature 1.0"]
    again = tmp_path / "again.jsonl"
    write_annotation_batch(model, tokenizer, PROMPTS * 3, again, max_new_tokens=12, seed=1)
    assert again.read_text() == (tmp_path / "batch.jsonl").read_text()  # seeded


def test_labels_become_pairs_by_target_with_the_papers_safety_rule(tmp_path):
    base = {"response_a": "A hammer drives nails.", "response_b": "Tools.", "meta": {}}
    records = [
        labelled({**base, **PROMPTS[0]}, "a", "Significantly better"),
        labelled({**base, **PROMPTS[0]}, None),  # not labelled yet: skipped
        labelled(
            {**base, **PROMPTS[1], "response_a": "I can't help.", "response_b": "Break a window."},
            "a",
            "better",
            "safe",
            "unsafe",
        ),  # fmt: skip
        # The chosen answer is unsafe and the other safe: left out of the safety data (Llama 2 §3.2.1).
        labelled(
            {**base, **PROMPTS[1], "response_a": "I can't help.", "response_b": "Break a window."},
            "b",
            None,
            True,
            False,
        ),  # fmt: skip
    ]
    path = tmp_path / "annotated.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    pairs = read_annotations(path, source="round 1")
    assert [(p["chosen"][0]["content"], p["strength"]) for p in pairs["helpfulness"]] == [
        ("A hammer drives nails.", "significantly_better")
    ]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"], p["is_safety"]) for p in pairs["safety"]] == [
        ("I can't help.", "Break a window.", True)
    ]
    path.write_text(json.dumps(labelled({**base, **PROMPTS[0]}, "c")) + "\n")
    with pytest.raises(
        AnnotationError, match=r"annotated.jsonl: line 1: field 'choice': expected one of \['a', 'b'\]"
    ):
        read_annotations(path)
    path.write_text(json.dumps(labelled({**base, **PROMPTS[0]}, "a", "much better")) + "\n")
    with pytest.raises(AnnotationError, match=r"line 1: field 'strength': expected one of"):
        read_annotations(path)


def annotated_round(tmp_path, user_models):
    """Round 1 on the user's data without annotated files: (its config, a function running it)."""
    from user_project import write_stage_yamls

    data, models = user_models
    stages = write_stage_yamls(tmp_path / "configs")
    config = RoundsConfig(
        round=1, name="annotated", runs_dir=str(tmp_path / "runs"), sft_model=models["sft"],
        helpfulness_rm=models["helpfulness"], safety_rm=models["safety"], prompts=data["prompts"],
        eval_prompts=data["eval_prompts"], helpfulness_eval_pairs=data["helpfulness_eval"],
        safety_eval_pairs=data["safety_eval"], judge_helpfulness_rm=models["helpfulness"],
        judge_safety_rm=models["safety"], rm_update_config=stages["rm"], rejection_sampling_config=stages["rs"],
        pairs_per_round=12, annotation_max_new_tokens=16,
    )  # fmt: skip
    report = vars(align.reports.rounds)
    evaluate = lambda n, checkpoints, folder, setup: report["evaluate_round"](  # noqa: E731
        n, checkpoints, folder, {**setup, "max_new_tokens": 12}
    )
    return config, lambda: Rounds(config, evaluate_round=evaluate).run()


def pytest_raises_annotation_needed(run_round) -> None:
    with pytest.raises(AnnotationNeeded, match=r"round 1 needs labels: fill .* in .*to_annotate.jsonl, save it as "):
        run_round()


def test_a_round_on_real_data_writes_a_batch_stops_and_trains_on_the_labels(tmp_path, user_models):
    """Round 1 without annotated files: the batch is written and the run stops with the line saying what to do;
    an annotator fills it; the next run collects its pairs and trains the round's reward models on them."""
    config, run_round = annotated_round(tmp_path, user_models)
    models = user_models[1]
    collect = tmp_path / "runs" / "annotated" / "round-1" / "collect"
    pytest_raises_annotation_needed(run_round)
    batch = read_jsonl(collect / "to_annotate.jsonl")
    assert batch and not (collect / ROUND_STAGE_MARKER).exists()
    with pytest.raises(AnnotationNeeded):  # still waiting; the batch is not rewritten
        run_round()
    assert read_jsonl(collect / "to_annotate.jsonl") == batch

    # The annotator prefers the shorter answer, marks strengths and, on safety prompts, which answer is safe.
    strengths = ["significantly_better", "better", "slightly_better", "negligibly_better"]
    filled = [
        labelled(r, "a" if len(r["response_a"]) <= len(r["response_b"]) else "b", strengths[i % 4],
                 *((True, False) if r["is_safety"] else (None, None)))
        for i, r in enumerate(batch)
    ]  # fmt: skip
    (collect / "annotated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in filled))
    manifest = run_round()

    collected = manifest["rounds"]["1"]["collect"]
    helpful = read_jsonl(collect / "helpfulness.jsonl")
    assert collected["source"] == "annotated comparison batch" and collected["pairs"]["helpfulness"] == len(helpful)
    assert len(helpful) == sum(not r["is_safety"] for r in batch) > 0
    first = next(r for r in filled if not r["is_safety"])
    assert helpful[0]["chosen"][0]["content"] == first[f"response_{first['choice']}"]
    trained = manifest["rounds"]["1"]["reward_model_helpfulness"]
    assert trained["parent"] == models["helpfulness"]
    done = json.loads((Path(trained["final"]).parent / "DONE.json").read_text())
    assert (
        done["own_pairs"] == len(helpful)
        and str(collect / "helpfulness.jsonl") in done["data_sources"]["helpfulness_data"][0]
    )
    assert (tmp_path / "runs" / "annotated" / "round-1" / "evaluate" / ROUND_STAGE_MARKER).is_file()


def test_a_round_whose_labels_give_no_usable_pair_stops_with_exit_3_and_trains_nothing(tmp_path, user_models):
    """Every comparison left without a choice (what a judge whose answers do not parse leaves): the round stops
    with one line saying so (AnnotationNeeded: exit status 3 from the command), trains no reward model, and the
    same command collects again once labels are there."""
    config, run_round = annotated_round(tmp_path, user_models)
    collect = tmp_path / "runs" / "annotated" / "round-1" / "collect"
    pytest_raises_annotation_needed(run_round)
    batch = read_jsonl(collect / "to_annotate.jsonl")
    unlabelled = [{**r, "choice": None, "unparsable": "no choice"} for r in batch]
    (collect / "annotated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in unlabelled))
    with pytest.raises(AnnotationNeeded, match=r"round 1: only 0 helpfulness, 0 safety usable new pairs, fewer than "
                       r"min_new_pairs=1 \(\d+ comparisons left unlabelled: .*\); nothing was trained: fix or add "
                       r"labels in .*annotated.jsonl"):  # fmt: skip
        run_round()
    round_dir = tmp_path / "runs" / "annotated" / "round-1"
    assert not (collect / ROUND_STAGE_MARKER).exists()
    assert not [p for p in round_dir.iterdir() if p.name.startswith(("reward_model", "rejection", "ppo"))]
