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
    assert "ceiling/kept_best_of_4" not in result  # no reward of the round given: the reward models' pick only
    with pytest.raises(ValueError, match="num_samples"):
        round_diagnostics(policy, tokenizer, helpful, safety, tokenizer, prompts, num_samples=1)


def test_what_rejection_sampling_keeps_is_judged_by_the_rounds_whole_reward(monkeypatch):
    """Given the round's reward and min_reward_gain, `kept_best_of_K` is the gold of the answer rejection
    sampling keeps (`keep_candidate`): by a reward that is the gold itself, the oracle's; with a gain no answer
    reaches, the most frequent answer's; an empty answer never."""
    import torch

    import align.world.diagnostics as diagnostics
    from align.reward_sources import RewardScorer, RewardSpec
    from align.rewards import Scores

    world = World(seed=0)
    prompts = [p for p in world.prompts(40, "test") if not p.is_safety][:3]
    good, refusal, wrong = ([world.respond(p, quality) for p in prompts] for quality in ("good", "refusal", "wrong"))
    samples = [[refusal[0], good[0], refusal[0], wrong[0]],  # the refusal twice: the most frequent
               [wrong[1], wrong[1], good[1], ""],
               ["", good[2], wrong[2], refusal[2]]]  # fmt: skip
    monkeypatch.setattr(diagnostics, "sample_answers", lambda *args, **kwargs: samples)
    monkeypatch.setattr(diagnostics, "score", lambda model, tokenizer, messages, answers: Scores(
        torch.zeros(len(answers)), torch.full((len(answers),), 0.5)))  # fmt: skip
    by_question = {p.messages[-1]["content"]: p for p in prompts}

    def gold(messages, answers):  # a reward source: each answer's gold helpfulness; an empty one's the highest
        return torch.tensor([gold_helpfulness(by_question[m[-1]["content"]], a) if a else 2.0
                             for m, a in zip(messages, answers)])  # fmt: skip

    def kept(min_reward_gain: float) -> dict[str, float]:
        reward = RewardScorer(RewardSpec("weighted_sum", {"gold": {"function": "tests:gold"}}), {"gold": gold})
        return round_diagnostics(None, None, None, None, None, prompts, num_samples=4, reward=reward,
                                 min_reward_gain=min_reward_gain)  # fmt: skip

    golds = [[gold_helpfulness(p, a) for a in answers] for p, answers in zip(prompts, samples)]
    by_gold = kept(0.0)
    assert by_gold["ceiling/kept_best_of_4"] == pytest.approx(sum(max(g) for g in golds) / 3)
    assert by_gold["ceiling/kept_best_of_4"] == pytest.approx(by_gold["ceiling/oracle_best_of_4"])
    assert by_gold["ceiling/kept_captured"] == pytest.approx(1.0)
    # A gain of 5 is beyond any: prompt 1 keeps its refusal (twice), prompt 2 its wrong answer (twice), prompt 3
    # the best of its three non-empty answers (once each: the best-rewarded of them).
    expected = (golds[0][0] + golds[1][0] + max(golds[2][1:])) / 3
    assert kept(5.0)["ceiling/kept_best_of_4"] == pytest.approx(expected)
    assert "ceiling/kept_best_of_4" not in round_diagnostics(None, None, None, None, None, prompts, num_samples=4)


def test_the_rounds_reward_is_judged_on_the_gold_ordered_pairs_apart_from_the_reward_model(monkeypatch):
    """`on_policy_round_reward/*` ranks the same gold-ordered pairs as the helpfulness model's accuracy, by the
    round's whole reward: a reward that is the gold orders every pair right, its negation none, whatever the
    reward model scores (here a constant, whose ties count wrong); no reward given, no such numbers."""
    import torch

    import align.world.diagnostics as diagnostics
    from align.reward_sources import RewardScorer, RewardSpec
    from align.rewards import Scores

    world = World(seed=0)
    prompts = [p for p in world.prompts(40, "test") if not p.is_safety][:2]
    samples = [[world.respond(p, quality) for quality in ("good", "wrong", "refusal", "good")] for p in prompts]
    monkeypatch.setattr(diagnostics, "sample_answers", lambda *args, **kwargs: samples)
    monkeypatch.setattr(diagnostics, "score", lambda model, tokenizer, messages, answers: Scores(
        torch.zeros(len(answers)), torch.full((len(answers),), 0.5)))  # fmt: skip
    by_question = {p.messages[-1]["content"]: p for p in prompts}

    def diagnose(sign: float) -> dict[str, float]:
        def gold(messages, answers):
            return sign * torch.tensor([gold_helpfulness(by_question[m[-1]["content"]], a)
                                        for m, a in zip(messages, answers)])  # fmt: skip

        reward = RewardScorer(RewardSpec("weighted_sum", {"gold": {"function": "tests:gold"}}), {"gold": gold})
        return round_diagnostics(None, None, None, None, None, prompts, num_samples=4, reward=reward)

    right, reversed_ = diagnose(1.0), diagnose(-1.0)
    pairs = right["on_policy_helpfulness_rm/gold_pairs"]
    assert pairs >= 4 and right["on_policy_round_reward/gold_pairs"] == pairs  # good > wrong > refusal, twice
    assert right["on_policy_round_reward/gold_pair_accuracy"] == 1.0
    assert right["on_policy_round_reward/gold_answer_pair_accuracy"] == 1.0
    assert reversed_["on_policy_round_reward/gold_pair_accuracy"] == 0.0
    assert right["on_policy_helpfulness_rm/gold_pair_accuracy"] == 0.0  # the constant reward model: all ties
    no_reward = round_diagnostics(None, None, None, None, None, prompts, num_samples=4)
    assert not any(key.startswith("on_policy_round_reward/") for key in no_reward)


def test_earlier_reward_models_are_judged_on_the_same_pairs(monkeypatch):
    """`earlier_helpfulness_rms` (round -> loader): each model ranks this round's gold-ordered pairs, one
    `helpfulness_rm_of_round_<r>/*` per round: one that scores by gold gets them all, one that scores against gold
    none, and the round's own model keeps its own number."""
    import torch

    import align.world.diagnostics as diagnostics
    from align.rewards import Scores

    world = World(seed=0)
    prompts = [p for p in world.prompts(40, "test") if not p.is_safety][:2]
    samples = [[world.respond(p, quality) for quality in ("good", "wrong", "refusal", "near")] for p in prompts]
    monkeypatch.setattr(diagnostics, "sample_answers", lambda *args, **kwargs: samples)
    monkeypatch.setattr(diagnostics, "score", lambda model, tokenizer, messages, answers: Scores(
        model(messages, answers), model(messages, answers).sigmoid()))  # fmt: skip
    by_question = {p.messages[-1]["content"]: p for p in prompts}

    def by_gold(sign: float):
        return lambda messages, answers: sign * torch.tensor(
            [gold_helpfulness(by_question[m[-1]["content"]], a) for m, a in zip(messages, answers)])

    loads = []  # the signs of the models loaded, in order

    def loader(sign: float):
        def load():
            loads.append(sign)
            return by_gold(sign), None

        return load

    result = round_diagnostics(None, None, by_gold(1.0), by_gold(1.0), None, prompts, num_samples=4,
                               earlier_helpfulness_rms={2: loader(-1.0), 0: loader(1.0)})  # fmt: skip
    pairs = result["on_policy_helpfulness_rm/gold_pairs"]
    assert pairs >= 4 and loads == [1.0, -1.0]  # loaded once each, in round order
    assert result["helpfulness_rm_of_round_0/gold_pairs"] == result["helpfulness_rm_of_round_2/gold_pairs"] == pairs
    assert result["helpfulness_rm_of_round_0/gold_pair_accuracy"] == 1.0
    assert result["helpfulness_rm_of_round_2/gold_pair_accuracy"] == 0.0
    assert result["on_policy_helpfulness_rm/gold_pair_accuracy"] == 1.0
    assert not any(key.startswith("helpfulness_rm_of_round_1/") for key in result)


def test_the_rounds_reward_over_the_same_reward_models_scores_each_answer_once(chat_model, reward_models):
    """With the round's reward built over the reward models already in memory (`loaded`), each sampled answer
    goes through each reward model once (not once for the RMs' pick and again for the reward), and every
    number equals the diagnostics with the reward loaded on its own."""
    from align.reward_sources import LoadedModelSource, RewardScorer, parse_reward_spec

    prompts = World(seed=0).prompts(12, "test")
    tokenizer = load_tokenizer(chat_model)
    policy = AlignLlamaForCausalLM.from_pretrained(chat_model).eval()
    rms = {t: AlignLlamaForSequenceClassification.from_pretrained(reward_models[t]).eval() for t in reward_models}
    rm_tokenizer = load_tokenizer(reward_models["helpfulness"])
    spec = parse_reward_spec(None, str(reward_models["helpfulness"]), str(reward_models["safety"]))
    shared = RewardScorer.load(spec, loaded={reward_models[t]: (rms[t], load_tokenizer(reward_models[t]))
                                             for t in rms})  # fmt: skip
    assert all(type(shared.sources[t]) is LoadedModelSource and shared.sources[t].model is rms[t] for t in rms)
    rows = {t: 0 for t in rms}

    def counter(target):
        def count(module, args, kwargs, output):
            rows[target] += kwargs["input_ids"].shape[0]

        return count

    hooks = [rms[t].register_forward_hook(counter(t), with_kwargs=True) for t in rms]
    result = round_diagnostics(policy, tokenizer, rms["helpfulness"], rms["safety"], rm_tokenizer, prompts,
                               num_samples=4, max_new_tokens=16, seed=1, reward=shared, min_reward_gain=0.1)  # fmt: skip
    for hook in hooks:
        hook.remove()
    for target in rms:  # the 12 x 4 answers once, then the annotated on-policy pairs (chosen and rejected)
        assert rows[target] == 12 * 4 + 2 * int(result.get(f"on_policy_{target}_rm/pairs", 0)), target
    alone = round_diagnostics(policy, tokenizer, rms["helpfulness"], rms["safety"], rm_tokenizer, prompts,
                              num_samples=4, max_new_tokens=16, seed=1, reward=RewardScorer.load(spec),
                              min_reward_gain=0.1)  # fmt: skip
    assert result.keys() == alone.keys() and "ceiling/kept_best_of_4" in result
    assert all(result[k] == pytest.approx(v, nan_ok=True) for k, v in alone.items())
