"""align.world.diagnostics: the policy's ceiling, what the reward models capture of it, their on-policy accuracy."""

import math

import pytest

from align.data import load_tokenizer
from align.modeling import AlignLlamaForCausalLM, AlignLlamaForSequenceClassification
from align.world import World
from align.world.diagnostics import gold_by_kind, gold_pair_accuracy, reward_model_pair_accuracy, round_diagnostics
from align.world.gold import gold_helpfulness


def test_gold_by_kind_averages_each_kind_and_leaves_harmful_prompts_out():
    world = World(seed=0)
    prompts = world.prompts(60, "test")
    answers = [world.respond(p, "good") if i % 2 else world.respond(p, "refusal") for i, p in enumerate(prompts)]
    by_kind = gold_by_kind(prompts, answers)
    assert "gold_by_kind/harmful" not in by_kind
    for kind in {p.kind for p in prompts} - {"harmful"}:
        scores = [gold_helpfulness(p, a) for p, a in zip(prompts, answers) if p.kind == kind]
        assert by_kind[f"gold_by_kind/{kind}"] == pytest.approx(sum(scores) / len(scores))


def test_pair_accuracy_counts_the_pairs_the_model_orders_as_labelled(monkeypatch):
    import align.world.diagnostics as diagnostics

    def by_length(model, tokenizer, prompts, answers):  # a stand-in reward model: longer is better
        import torch

        from align.rewards import Scores

        raw = torch.tensor([float(len(a)) for a in answers])
        return Scores(raw, raw.sigmoid())

    monkeypatch.setattr(diagnostics, "score", by_length)
    pairs = [
        {"prompt": [], "chosen": "a long answer", "rejected": "short", "strength": "better"},
        {"prompt": [], "chosen": "short", "rejected": "a long answer", "strength": "better"},
        {"prompt": [], "chosen": "a long answer", "rejected": "short", "strength": "significantly_better"},
        {"prompt": [], "chosen": "x", "rejected": "yy", "strength": "unsure"},  # no right answer: left out
    ]
    result = reward_model_pair_accuracy(None, None, pairs, "rm")
    assert result == {"rm/accuracy": 2 / 3, "rm/pairs": 3.0, "rm/accuracy_better": 0.5,
                      "rm/accuracy_significantly_better": 1.0}  # fmt: skip


def test_gold_pair_accuracy_orders_every_pair_of_distinct_answers_by_gold():
    answers = [["right", "wrong", "right ", "I can't help with that."], ["same", "same"]]
    golds = [[1.0, 0.0, 1.0, 0.2], [0.5, 0.5]]
    scores = [[2.0, 1.0, 2.0, 3.0], [0.0, 1.0]]
    result = gold_pair_accuracy(answers, golds, scores, "rm")
    # Distinct answers of prompt 1: right, wrong, the refusal (the repeat "right " is the same answer); pairs
    # whose gold differs by >= 0.1: right-wrong (ordered), right-refusal (not), wrong-refusal (ordered: 0.2 > 0
    # and 3 > 1). Prompt 2 has one distinct answer. Only right-wrong has no refusal in it.
    assert result == {"rm/gold_pair_accuracy": 2 / 3, "rm/gold_pairs": 3.0,
                      "rm/gold_answer_pair_accuracy": 1.0, "rm/gold_answer_pairs": 1.0}  # fmt: skip


def test_round_diagnostics_orders_oracle_sample_and_pick_on_a_trained_policy(chat_model, reward_models):
    prompts = World(seed=0).prompts(24, "test")
    tokenizer = load_tokenizer(chat_model)
    policy = AlignLlamaForCausalLM.from_pretrained(chat_model).eval()
    helpful, safety = (AlignLlamaForSequenceClassification.from_pretrained(reward_models[t]).eval()
                       for t in ("helpfulness", "safety"))  # fmt: skip
    result = round_diagnostics(policy, tokenizer, helpful, safety, load_tokenizer(reward_models["helpfulness"]),
                               prompts, num_samples=4, max_new_tokens=16, seed=1)  # fmt: skip
    oracle, sample, picked = (result[f"ceiling/{k}"] for k in ("oracle_best_of_4", "one_sample", "rm_best_of_4"))
    # The gold-best of 4 is at least the mean sample and at least what any pick keeps.
    assert oracle >= sample and oracle >= picked
    assert 0 <= sample <= 1 and 0 <= picked <= 1
    if oracle > sample:
        assert result["ceiling/captured"] == pytest.approx((picked - sample) / (oracle - sample))
    for target in ("helpfulness", "safety"):
        if f"on_policy_{target}_rm/accuracy" in result:
            assert 0 <= result[f"on_policy_{target}_rm/accuracy"] <= 1
            assert result[f"on_policy_{target}_rm/pairs"] >= 1
    # Sampling is row-seeded: the same seed gives the same numbers.
    again = round_diagnostics(policy, tokenizer, helpful, safety, load_tokenizer(reward_models["helpfulness"]),
                              prompts, num_samples=4, max_new_tokens=16, seed=1)  # fmt: skip
    assert all(again[k] == v or (math.isnan(v) and math.isnan(again[k])) for k, v in result.items())
    with pytest.raises(ValueError, match="num_samples"):
        round_diagnostics(policy, tokenizer, helpful, safety, tokenizer, prompts, num_samples=1)
