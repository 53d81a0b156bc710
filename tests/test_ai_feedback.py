"""AI feedback: a judge chat model's answers parsed into the paper's labels, a reward model's preferences, and a
round on the user's data labelled by a model instead of people."""

import math
from pathlib import Path

import pytest
import torch

import align.reports.rounds
from align.ai_feedback import (
    STRENGTH_GAPS,
    JudgeAnnotator,
    RewardModelAnnotator,
    annotate_batch,
    parse_annotator,
    parse_judge_answer,
)
from align.annotation import read_annotations
from align.io import atomic_write_jsonl, read_jsonl
from align.rewards import score

GOOD = "Better answer: B\nHow much better: slightly better\nSafety: only the better answer is safe"


def batch(tmp_path: Path, size: int = 4) -> Path:
    records = [
        {"id": f"p{i}", "prompt": [{"role": "user", "content": f"How do I fix thing {i}?"}], "is_safety": i == 1,
         "response_a": f"Turn it off and on {i} times.", "response_b": "No.", "choice": None, "strength": None,
         "a_is_safe": None, "b_is_safe": None}
        for i in range(size)
    ]  # fmt: skip
    atomic_write_jsonl(tmp_path / "to_annotate.jsonl", records)
    return tmp_path / "to_annotate.jsonl"


def test_judge_answers_are_parsed_or_counted_never_defaulted():
    assert parse_judge_answer(GOOD, is_safety=True) == {
        "choice": "b", "strength": "slightly_better", "b_is_safe": True, "a_is_safe": False,
    }  # fmt: skip
    assert parse_judge_answer("better answer: **A**\nhow much better: Unsure", is_safety=False) == {
        "choice": "a", "strength": "unsure",
    }  # fmt: skip
    assert parse_judge_answer("Better answer: A\nHow much better: better\nSafety: both unsafe", True) == {
        "choice": "a", "strength": "better", "a_is_safe": False, "b_is_safe": False,
    }  # fmt: skip
    assert parse_judge_answer("I like the second one.", is_safety=False) == "no choice"
    assert parse_judge_answer("Better answer: C\nHow much better: better", is_safety=False) == "no choice"
    assert parse_judge_answer("Better answer: A\nHow much better: a lot", is_safety=False) == "no strength"
    assert parse_judge_answer("Better answer: A\nHow much better: better", is_safety=True) == "no safety"
    assert parse_annotator("human") == ("human", None) and parse_annotator("rm:/x") == ("rm", {"helpfulness": "/x", "safety": "/x"})
    for bad in ("robot:/x", "judge:", "rm"):
        with pytest.raises(ValueError, match="annotator: expected 'human', 'judge:<chat model dir>'"):
            parse_annotator(bad)


def test_a_judge_labels_a_batch_and_counts_what_it_cannot_parse(tmp_path, user_models, monkeypatch):
    """The user's own chat model as judge: its real (tiny, untrained-for-this) answers, then answers that are
    partly well-formed; unparsable comparisons stay unlabelled, are counted by reason, and the round skips them."""
    data, models = user_models
    template = tmp_path / "judge.txt"
    template.write_text("Q: {conversation}\nA: {answer_a}\nB: {answer_b}\nBetter answer:")
    judge = JudgeAnnotator(models["sft"], template, max_new_tokens=8)
    source = batch(tmp_path)
    question = judge.question(read_jsonl(source)[0])[0]["content"]
    assert question.startswith("Q: User: How do I fix thing 0?\nA: Turn it off and on 0 times.\nB: No.")
    counts = annotate_batch(source, tmp_path / "real.jsonl", judge)  # a 2-layer model's answers: not parsable
    assert counts["labelled"] + sum(counts["unparsable"].values()) == 4
    written = read_jsonl(tmp_path / "real.jsonl")
    assert all(r["judge_answer"] is not None and r["annotator"] == f"judge:{models['sft']}" for r in written)

    def scripted(self, records):
        """p0: prefers "No." wherever it stands; p1: no safety line on a safety prompt; p2: free text; p3: always
        A, whatever A is (a position bias)."""
        where_no = ["A" if r["response_a"] == "No." else "B" for r in records]
        return {"p0": GOOD.replace("Better answer: B", f"Better answer: {where_no[0]}"),
                "p1": "Better answer: A\nHow much better: better", "p2": "no idea",
                "p3": "Better answer: A\nHow much better: better"}.values()  # fmt: skip

    monkeypatch.setattr(JudgeAnnotator, "answers", lambda self, records: list(scripted(self, records)))
    counts = annotate_batch(source, tmp_path / "annotated.jsonl", judge)
    assert counts == {"annotated_by": f"judge:{models['sft']}", "labelled": 1,
                      "unparsable": {"no safety": 1, "no choice": 1, "inconsistent": 1}}  # fmt: skip
    records = read_jsonl(tmp_path / "annotated.jsonl")
    assert [r["choice"] for r in records] == ["b", None, None, None]
    assert [r.get("unparsable") for r in records] == [None, "no safety", "no choice", "inconsistent"]
    assert records[0]["judge_answer_swapped"].startswith("Better answer: A")  # "No." was A the second time
    pairs = read_annotations(tmp_path / "annotated.jsonl")
    assert len(pairs["helpfulness"]) == 1 and pairs["helpfulness"][0]["strength"] == "slightly_better"
    with pytest.raises(ValueError, match=r"judge.txt: \{answer_b\} missing"):
        template.write_text("{conversation} {answer_a}")
        JudgeAnnotator(models["sft"], template)


def test_a_reward_model_prefers_what_it_scores_higher(tmp_path, user_models):
    data, models = user_models
    annotator = RewardModelAnnotator(models["safety"])
    source = batch(tmp_path)
    counts = annotate_batch(source, tmp_path / "annotated.jsonl", annotator)
    assert counts == {"annotated_by": f"rm:{models['safety']}", "labelled": 4, "unparsable": {}}
    records = read_jsonl(tmp_path / "annotated.jsonl")
    prompts = [r["prompt"] for r in records]
    direct = {side: score(annotator.source.model, annotator.source.tokenizer, prompts,
                          [r[f"response_{side}"] for r in records]).raw for side in "ab"}  # fmt: skip
    for index, record in enumerate(records):
        a, b = direct["a"][index].item(), direct["b"][index].item()
        assert record["scores"] == pytest.approx({"a": a, "b": b}, abs=1e-5)
        assert record["choice"] == ("a" if a >= b else "b")
        expected = next((name for name, least in STRENGTH_GAPS if abs(a - b) >= least), "negligibly_better")
        assert record["strength"] == expected
        if record["is_safety"]:
            assert record["a_is_safe"] == (1 / (1 + math.exp(-a)) >= 0.5)
        else:
            assert "a_is_safe" not in record or record["a_is_safe"] is None
    assert torch.isfinite(direct["a"]).all()


def test_a_round_labelled_by_a_reward_model_per_data_set_goes_on_and_says_so(tmp_path, user_models):
    """`annotator: rm:helpfulness=<dir>,safety=<dir>`: the round writes its batch, labels the comparisons of safety
    prompts with the safety reward model and the others with the helpfulness one (not one model for both),
    trains on them, and the manifest and report name each judge."""
    import dataclasses

    from test_annotation import annotated_round

    from align.ai_feedback import parse_annotator

    config, _ = annotated_round(tmp_path, user_models)
    helpful, safety = user_models[1]["helpfulness"], user_models[1]["safety"]
    assert parse_annotator(f"rm:{helpful}") == ("rm", {"helpfulness": helpful, "safety": helpful})
    with pytest.raises(ValueError, match="names no judge for safety"):
        parse_annotator(f"rm:helpfulness={helpful}")
    config = dataclasses.replace(config, annotator=f"rm:helpfulness={helpful},safety={safety}")
    from align.rounds import Rounds

    report = vars(align.reports.rounds)
    manifest = Rounds(config, evaluate_round=lambda n, c, f, s: report["evaluate_round"](
        n, c, f, {**s, "max_new_tokens": 12})).run()  # fmt: skip
    collect = manifest["rounds"]["1"]["collect"]
    judges = [f"rm:{helpful} (helpfulness)", f"rm:{safety} (safety)"]
    assert collect["annotated_by"] == sorted(judges) and collect["unparsable"] == {}
    labelled = read_jsonl(Path(config.runs_dir) / config.name / "round-1" / "collect" / "annotated.jsonl")
    assert {r["annotator"] for r in labelled if r["is_safety"]} == {judges[1]}
    assert {r["annotator"] for r in labelled if not r["is_safety"]} == {judges[0]}
    assert collect["pairs"]["helpfulness"] == sum(not r["is_safety"] for r in labelled) > 0
    text = report["write_report"](Path(config.runs_dir) / config.name).read_text()
    assert f"Round 1's comparisons labelled by {', '.join(sorted(judges))}." in text
