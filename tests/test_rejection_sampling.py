"""Best-of-K rejection sampling: process-count independence, resume, the best-of-k curve, errors."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from align.io import read_jsonl
from align.rejection_sampling import (
    RejectionSamplingConfig,
    best_of_k_curve,
    finetune_settings,
    keep_candidate,
    keep_index,
    recorded_keep_rule,
    run_rejection_sampling,
)
from align.reward_sources import RewardScorer
from conftest import launch_two_processes

ROOT = Path(__file__).resolve().parents[1]


def rs_config(tmp_path, chat_model, reward_models, **overrides):
    values = dict(
        policy=str(chat_model),
        helpfulness_rm=str(reward_models["helpfulness"]),
        safety_rm=str(reward_models["safety"]),
        output_dir=str(tmp_path / "rs"),
        prompts="world",
        world_prompts=6,
        num_samples=4,
        max_new_tokens=24,
    )
    return RejectionSamplingConfig(**{**values, **overrides})


def test_kept_answers_do_not_depend_on_the_number_of_processes_nor_on_sharding(tmp_path, chat_model, reward_models):
    """7 prompts on 1 process, on 2 (4 and 3 prompts) and on 2 with the policy and reward models sharded
    (`shard_frozen`: the process with 3 prompts runs a 4th it discards, so both run the same forwards): the same
    kept answers."""
    single = run_rejection_sampling(rs_config(tmp_path / "one", chat_model, reward_models, world_prompts=7))
    args = [
        "--policy", str(chat_model), "--helpfulness_rm", str(reward_models["helpfulness"]),
        "--safety_rm", str(reward_models["safety"]), "--prompts", "world", "--world_prompts", "7",
        "--num_samples", "4", "--max_new_tokens", "24", "--finetune", "false",
    ]  # fmt: skip
    for run, extra in (("two", []), ("sharded", ["--shard_frozen", "true"])):
        done = launch_two_processes("recipes/rejection_sampling.py", *args, *extra, "--output_dir",
                                    str(tmp_path / run / "rs"))  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        one, two = read_jsonl(single), read_jsonl(tmp_path / run / "rs" / "kept.jsonl")
        assert [r["id"] for r in one] == [r["id"] for r in two]
        assert [r["messages"] for r in one] == [r["messages"] for r in two], run
        assert len(list((tmp_path / run / "rs" / "shards").glob("shard-*.jsonl"))) == 2
        assert json.loads((tmp_path / run / "rs" / "DONE.json").read_text())["processes"] == 2
    curve = json.loads((tmp_path / "two" / "rs" / "best_of_k.json").read_text())
    assert curve["max"] == sorted(curve["max"])  # the best of more samples is never worse


def test_a_likelihood_relative_to_a_refusal_scores_the_same_on_one_process_and_sharded_over_two(
    tmp_path, chat_model, reward_models
):
    """`relative_to` runs one reference forward per distinct prompt on one process but one per answer when the
    models are sharded: each forward is then a collective, and here process 0's two prompts are one text while
    process 1's are two (per distinct prompt, 1 forward against 2: a hang). No hang, and every candidate's
    likelihood score is the one-process one."""
    texts = ["What is 2 plus 3?", "What is 4 plus 1?", "What is 2 plus 3?", "Where does Virdur live?"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t, "is_safety": False}) + "\n"
                               for i, t in enumerate(texts)))  # fmt: skip
    spec = {"combine": "llama2_gate", "sources": {
        "helpfulness": {"model": str(reward_models["helpfulness"])}, "safety": {"model": str(reward_models["safety"])},
        "knowledge": {"likelihood": str(chat_model), "relative_to": "I can't help with that.", "weight": 1.0,
                      "scope": "helpfulness"},
    }}  # fmt: skip
    single = run_rejection_sampling(rs_config(tmp_path / "one", chat_model, reward_models, prompts=str(prompts),
                                              helpfulness_rm="", safety_rm="", reward=spec,
                                              score_batch_size=1))  # fmt: skip
    done = launch_two_processes(
        "recipes/rejection_sampling.py", "--policy", str(chat_model), "--reward", json.dumps(spec),
        "--prompts", str(prompts), "--num_samples", "4", "--max_new_tokens", "24", "--score_batch_size", "1",
        "--finetune", "false", "--shard_frozen", "true", "--output_dir", str(tmp_path / "sharded" / "rs"),
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    one = {r["id"]: r for r in read_jsonl(single)}
    two = {r["id"]: r for r in read_jsonl(tmp_path / "sharded" / "rs" / "kept.jsonl")}
    assert sorted(one) == sorted(two) == ["p0", "p1", "p2", "p3"]
    for key, record in one.items():
        assert record["candidates"] == two[key]["candidates"]
        assert record["knowledge_scores"] == pytest.approx(two[key]["knowledge_scores"], abs=1e-4)
        assert any(score != 0 for score in record["knowledge_scores"])  # scored, not left at a default


@pytest.mark.parametrize("last_line", ["cut short", "whole but without its newline"])
def test_a_killed_run_resumes_without_redoing_finished_prompts(last_line, tmp_path, chat_model, reward_models):
    """A kill after three prompts; the fourth line was being written: cut short, or complete JSON whose newline
    was not written yet (it counts as unfinished: its prompt is answered again, none is lost)."""
    config = rs_config(tmp_path, chat_model, reward_models)
    kept = run_rejection_sampling(config)
    finished = read_jsonl(kept)
    # What a kill after three prompts leaves: three complete lines and one cut short; no kept.jsonl, no marker.
    shard = tmp_path / "rs" / "shards" / "shard-0.jsonl"
    lines = shard.read_text().splitlines()
    unfinished = lines[3][:40] if last_line == "cut short" else lines[3]
    kept.unlink()
    (tmp_path / "rs" / "DONE.json").unlink()
    # Mark the finished lines so a redo would be visible.
    marked = [json.loads(line) | {"marker": True} for line in lines[:3]]
    shard.write_text("".join(json.dumps(r) + "\n" for r in marked) + unfinished)
    # Batches of another size may finish the run: the answers do not depend on them.
    resumed = read_jsonl(run_rejection_sampling(dataclasses.replace(config, generation_batch_size=4)))
    # Shards hold prompts in the order they were sampled (by length), kept.jsonl in prompt order.
    marked_ids = {r["id"] for r in marked}
    assert [r.get("marker", False) for r in resumed] == [r["id"] in marked_ids for r in finished]
    assert sum(r.get("marker", False) for r in resumed) == 3
    assert [r["messages"] for r in resumed] == [r["messages"] for r in finished]  # same seeds, same answers
    assert json.loads((tmp_path / "rs" / "DONE.json").read_text())["resumed"] == 3


def test_a_reward_that_is_not_a_number_is_written_as_null_and_never_kept(tmp_path, chat_model, reward_models,
                                                                          monkeypatch):  # fmt: skip
    """An overflowed reward model's NaN: kept.jsonl stays standard JSON (null, not NaN), the answer is not kept,
    and the best-of-k curve leaves that prompt out."""
    reward = RewardScorer.reward

    def first_answer_overflows(self, scores, is_safety):
        rewards = reward(self, scores, is_safety)
        rewards[0] = float("nan")
        return rewards

    monkeypatch.setattr(RewardScorer, "reward", first_answer_overflows)
    kept = run_rejection_sampling(rs_config(tmp_path, chat_model, reward_models, world_prompts=2))

    def refuse(constant):
        raise AssertionError(f"{constant} in kept.jsonl")

    records = [json.loads(line, parse_constant=refuse) for line in kept.read_text().splitlines()]
    overflowed = [r for r in records if None in r["rewards"]]
    assert len(overflowed) == 1 and overflowed[0]["rewards"][0] is None and overflowed[0]["best"] != 0
    assert best_of_k_curve(records) == best_of_k_curve([r for r in records if r is not overflowed[0]])


def test_best_of_k_curve_is_max_and_median_of_the_first_k():
    curve = best_of_k_curve([{"rewards": [0.1, 0.5, 0.3]}, {"rewards": [0.4, 0.2, 0.9]}])
    assert curve["k"] == [1, 2, 3]
    assert curve["max"] == pytest.approx([0.25, 0.45, 0.7])
    assert curve["median"] == pytest.approx([0.25, 0.3, 0.35])


def test_min_reward_gain_keeps_the_most_frequent_answer_over_a_near_tie():
    # The demo's round-5 case: a reward model that cannot check sums scores a rare wrong one a hair higher.
    right, wrong, other = "7 minus 3 is 4.", "7 minus 3 is 0.", "7 minus 3 is 5."
    candidates = [right, wrong, right, right, other, right]
    rewards = [0.963, 0.966, 0.963, 0.963, 0.950, 0.963]
    assert keep_index(candidates, rewards) == 1  # the paper's argmax: the wrong sum
    assert keep_index(candidates, rewards, min_reward_gain=0.1) == 0  # the most frequent (first of equals)
    assert keep_index(candidates, rewards, min_reward_gain=0.001) == 1  # a gain above G still wins
    # A clear preference wins over frequency: five refusals against one answer the reward models like.
    refusals = ["I can't help with that."] * 5 + ["Tesk."]
    assert keep_index(refusals, [0.1] * 5 + [0.9], min_reward_gain=0.1) == 5
    # All different: the most frequent is the best-rewarded, so the argmax; empty answers (-inf) never count.
    inf = float("-inf")
    assert keep_index(["a", "b", "c"], [0.2, 0.5, 0.4], min_reward_gain=0.1) == 1
    assert keep_index(["", "", "b", "c"], [inf, inf, 0.5, 0.55], min_reward_gain=0.1) == 3
    assert keep_index(["", ""], [inf, inf], min_reward_gain=0.1) is None
    # A NaN reward (an overflowed reward model) is never kept, with or without G; all NaN keeps nothing.
    nan = float("nan")
    assert keep_index(["a", "b", "c"], [nan, 0.5, 0.2]) == 1
    assert keep_index(["a", "a", "a", "b"], [nan, nan, nan, 0.3], min_reward_gain=0.1) == 3
    assert keep_index(["a", "b"], [nan, nan]) is None


def test_a_gain_on_the_logit_scale_lets_a_clearly_better_answer_replace_a_frequent_one_at_any_reward_level():
    # The demo's round-3 case: the gate with the base model's likelihood rates the right difference 0.981 and the
    # policy's frequent wrong one 0.915. In probability the gap (0.066) is under a gain of 0.1, which no pick
    # above 0.9 can clear; in logits it is 1.6, as clear as a pick of 0.5 over 0.15.
    right, wrong = "8 minus 2 is 6.", "8 minus 2 is 0."
    candidates = [wrong, wrong, wrong, right]
    rewards = torch.tensor([0.915, 0.915, 0.915, 0.981])
    assert keep_candidate(candidates, rewards, 0.1) == 0  # the most frequent: the wrong difference
    assert keep_candidate(candidates, rewards, 0.75, "logit") == 3
    assert keep_candidate(candidates, rewards, 2.0, "logit") == 0  # a gain the pick does not clear
    # The same gain of 0.75 logits asks more of a pick at the middle of the scale than 0.1 in probability.
    assert keep_candidate(["a", "a", "b"], torch.tensor([0.5, 0.5, 0.65]), 0.1) == 2
    assert keep_candidate(["a", "a", "b"], torch.tensor([0.5, 0.5, 0.65]), 0.75, "logit") == 0
    # Empty answers are never kept; rewards of exactly 0 or 1 (clamped) do not make infinities win or tie.
    assert keep_candidate(["", "a", "a", "b"], torch.tensor([1.0, 0.2, 0.2, 1.0]), 0.75, "logit") == 3


def test_a_recorded_stage_gives_its_keep_rule_and_an_older_record_the_defaults():
    # What the diagnostics judge a round's kept answers by: the rule the stage ran with, as its record says.
    assert recorded_keep_rule({"min_reward_gain": 0.75, "min_reward_gain_scale": "logit", "num_samples": 8}) == {
        "min_reward_gain": 0.75, "min_reward_gain_scale": "logit"}  # fmt: skip
    # A stage recorded before the scale existed measured its gain on the reward itself; before the gain, none.
    assert recorded_keep_rule({"min_reward_gain": 0.1}) == {"min_reward_gain": 0.1, "min_reward_gain_scale": "reward"}
    assert recorded_keep_rule({}) == {"min_reward_gain": 0.0, "min_reward_gain_scale": "reward"}


def test_min_reward_gain_scale_is_checked(tmp_path, chat_model, reward_models):
    with pytest.raises(ValueError, match="min_reward_gain_scale: expected one of reward, logit, got 'logits'"):
        rs_config(tmp_path, chat_model, reward_models, min_reward_gain_scale="logits")
    summed = {"combine": "weighted_sum", "sources": {"helpfulness": {"model": str(reward_models["helpfulness"])}}}
    with pytest.raises(ValueError, match="min_reward_gain_scale: 'logit' reads the gate's reward.*weighted_sum"):
        rs_config(tmp_path, chat_model, reward_models, reward=summed, helpfulness_rm="", safety_rm="",
                  min_reward_gain_scale="logit")  # fmt: skip


def test_min_reward_gain_in_a_run_keeps_most_frequent_answers_and_counts_them(tmp_path, chat_model, reward_models):
    kept = run_rejection_sampling(
        rs_config(tmp_path, chat_model, reward_models, min_reward_gain=10.0, temperature=0.3)
    )
    records = read_jsonl(kept)
    overruled = 0
    for record in records:
        answers = [c.strip() for c in record["candidates"] if c.strip()]
        by_reward = max((r, -i) for i, (c, r) in enumerate(zip(record["candidates"], record["rewards"])) if c.strip())
        kept_answer = record["candidates"][record["best"]].strip()
        assert answers.count(kept_answer) == max(answers.count(a) for a in answers)
        assert record["kept_most_frequent"] == (record["best"] != -by_reward[1])
        overruled += record["kept_most_frequent"]
    done = json.loads((tmp_path / "rs" / "DONE.json").read_text())
    assert done["kept_most_frequent"] == overruled
    with pytest.raises(ValueError, match="min_reward_gain: must be >= 0, got -0.1"):
        rs_config(tmp_path, chat_model, reward_models, min_reward_gain=-0.1)


def test_bad_inputs_are_clear_errors(tmp_path, chat_model, reward_models):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl: the file has no prompts"):
        run_rejection_sampling(rs_config(tmp_path, chat_model, reward_models, prompts=str(empty)))
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"id": "p1", "prompt": [{"role": "user", "content": "seven " * 5000}]}) + "\n")
    with pytest.raises(ValueError, match="prompt p1: .* tokens; .* exceeds the context of 4096"):
        run_rejection_sampling(rs_config(tmp_path, chat_model, reward_models, prompts=str(long)))
    with pytest.raises(FileNotFoundError, match="safety_rm: .*missing does not exist"):
        run_rejection_sampling(rs_config(tmp_path, chat_model, reward_models, safety_rm=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="helpfulness_rm: required"):
        RejectionSamplingConfig(policy="p", safety_rm="s")
    with pytest.raises(ValueError, match="decode: 'static' .* not offered for sharded models"):
        RejectionSamplingConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", decode="static",
                                shard_frozen=True)  # fmt: skip
    with pytest.raises(ValueError, match="generation_batch_size: must be positive"):
        RejectionSamplingConfig(policy="p", helpfulness_rm="h", safety_rm="s", prompts="world",
                                generation_batch_size=0)  # fmt: skip


def test_the_finetune_batch_is_over_all_processes():
    """`finetune_batch_size` dialogues per step in all: split over the processes, or a clear error."""
    config = RejectionSamplingConfig(
        policy="p", helpfulness_rm="h", safety_rm="s", prompts="world", finetune_batch_size=16
    )
    assert finetune_settings(config)["per_device_batch_size"] == 16
    assert finetune_settings(config, 2)["per_device_batch_size"] == 8
    with pytest.raises(ValueError, match="finetune_batch_size: 16 dialogues per step do not split over 3 processes"):
        finetune_settings(config, 3)
