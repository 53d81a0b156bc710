"""Why a round helps or not, measured on the world: the policy's ceiling and what the reward models see of it.

`round_diagnostics(policy, tokenizer, helpfulness_rm, safety_rm, prompts, ...)` samples K answers to each
held-out prompt from the round's policy and measures:

- the policy's *ceiling*: gold of the gold-best of the K answers (oracle best-of-K), against the mean gold of
  one sample (best-of-1) and the gold of the answer the round's reward models pick (the best by the gated
  reward of docs/method.md §7: what rejection sampling keeps with `min_reward_gain` 0); `captured` is the
  share of the ceiling's gain over one sample that the reward models' pick gets ((picked - sample) /
  (oracle - sample)); given the round's reward (`reward`: its spec's every source, e.g. the demo's likelihood
  term) and rejection sampling's `min_reward_gain`, also the gold of the answer rejection sampling would keep
  (`kept_best_of_K`, `kept_captured`): what the round actually fine-tunes on, where the reward models' pick is
  what they alone would choose;
- the reward models' accuracy *on the latest policy's pairs*: the first two samples of each prompt labelled
  by the world's annotator (helpfulness prompts for the helpfulness model, safety prompts for the safety
  model), by preference strength, as the held-out accuracy is reported. These pairs are what the next round's
  reward models will be trained on and what rejection sampling and PPO ask them to rank;
- the helpfulness reward model's accuracy on *every* pair of the K answers to a helpfulness prompt whose gold
  differs by at least `GOLD_PAIR_GAP`, ordered by gold (no annotator noise): the same question on ~10x the pairs
  of the annotated two-sample ones, so a change of a few points between rounds is measurable; and on the pairs
  of two answers (neither a refusal), which only content, form and rules tell apart; given the round's
  `reward`, the same for that reward (`on_policy_round_reward/*`): what rejection sampling and PPO optimise,
  which differs from the helpfulness model where the spec adds sources (the demo's likelihood term);
- given the earlier rounds' helpfulness reward models, each one's accuracy on the same gold-ordered pairs: on
  one fixed set of the latest policy's pairs, whether the reward models grow more accurate with each round's
  data (the paper's Fig. 6), which the per-round numbers above cannot tell from the pairs growing harder;
- greedy gold helpfulness by kind of prompt (arithmetic, fact, list, format, system, borderline), so a change
  in the headline number can be traced to the tasks that moved.

Helpfulness numbers are over the helpfulness prompts (the report's "gold helpfulness"); the safety prompts
count through the reward models' safety accuracy and the report's violation and false-refusal rates.
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..rejection_sampling import keep_candidate
from ..reward_sources import LoadedModelSource, RewardScorer
from ..rewards import SAFETY_THRESHOLD, Scores, gated_reward, score
from .annotator import FLIP_PROBABILITY, annotate
from .collection import sample_answers
from .gold import gold_helpfulness, is_refusal
from .tasks import WorldPrompt

# The annotator's strengths that have a right answer ("unsure" pairs have none).
STRENGTHS = tuple(strength for strength in FLIP_PROBABILITY if strength != "unsure")

# Two answers count as a gold-ordered pair when their gold helpfulness differs by at least this much (the
# annotator's "negligibly better" is below it).
GOLD_PAIR_GAP = 0.1


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def gold_by_kind(prompts: Sequence[WorldPrompt], answers: Sequence[str]) -> dict[str, float]:
    """Mean gold helpfulness of one answer per prompt, by kind of prompt (harmful prompts left out: their
    gold is the safety judgement)."""
    by_kind = defaultdict(list)
    for prompt, answer in zip(prompts, answers):
        if prompt.kind != "harmful":
            by_kind[prompt.kind].append(gold_helpfulness(prompt, answer))
    return {f"gold_by_kind/{kind}": _mean(values) for kind, values in sorted(by_kind.items())}


def gold_pair_accuracy(
    answers: Sequence[Sequence[str]],
    golds: Sequence[Sequence[float]],
    scores: Sequence[Sequence[float]],
    prefix: str,
    min_gap: float = GOLD_PAIR_GAP,
) -> dict[str, float]:
    """Share of the pairs of different answers to one prompt (per prompt: its answers, their gold, a reward
    model's scores) whose gold differs by at least `min_gap` and that the scores order as gold does, overall
    (`gold_pair_*`) and over the pairs of two answers neither of which is a refusal (`gold_answer_pair_*`).
    Ties in score count as wrong."""
    right: dict[str, list[float]] = {"gold_pair": [], "gold_answer_pair": []}
    for texts, gold, reward in zip(answers, golds, scores):
        first_of: dict[str, int] = {}
        for index, text in enumerate(texts):
            first_of.setdefault(text.strip(), index)
        distinct = list(first_of.values())
        for position, i in enumerate(distinct):
            for j in distinct[position + 1 :]:
                if abs(gold[i] - gold[j]) < min_gap:
                    continue
                ordered = float((reward[i] - reward[j]) * (gold[i] - gold[j]) > 0)
                right["gold_pair"].append(ordered)
                if not is_refusal(texts[i]) and not is_refusal(texts[j]):
                    right["gold_answer_pair"].append(ordered)
    result = {}
    for name, values in right.items():
        result[f"{prefix}/{name}_accuracy"] = _mean(values)
        result[f"{prefix}/{name}s"] = float(len(values))
    return result


def reward_model_pair_accuracy(
    model: Any, tokenizer: Any, pairs: Sequence[dict[str, Any]], prefix: str
) -> dict[str, float]:
    """Share of `pairs` ({prompt, chosen, rejected, strength}) whose chosen answer `model` scores higher, overall
    and by strength ("unsure" pairs are left out: they have no right answer)."""
    pairs = [pair for pair in pairs if pair["strength"] != "unsure"]
    if not pairs:
        return {}
    prompts = [pair["prompt"] for pair in pairs]
    chosen = score(model, tokenizer, prompts, [pair["chosen"] for pair in pairs]).raw
    rejected = score(model, tokenizer, prompts, [pair["rejected"] for pair in pairs]).raw
    right = (chosen > rejected).float().tolist()
    result = {f"{prefix}/accuracy": _mean(right), f"{prefix}/pairs": float(len(pairs))}
    for strength in STRENGTHS:
        bucket = [r for r, pair in zip(right, pairs) if pair["strength"] == strength]
        if bucket:
            result[f"{prefix}/accuracy_{strength}"] = _mean(bucket)
    return result


@torch.no_grad()
def round_diagnostics(
    policy: Any,
    tokenizer: Any,
    helpfulness_rm: Any,
    safety_rm: Any,
    rm_tokenizer: Any,
    prompts: Sequence[WorldPrompt],
    *,
    num_samples: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    reward: RewardScorer | None = None,
    min_reward_gain: float = 0.0,
    min_reward_gain_scale: str = "reward",
    earlier_helpfulness_rms: Mapping[int, Callable[[], tuple[Any, Any]]] | None = None,
) -> dict[str, float]:
    """The module docstring's measures for one policy and its round's reward models (flat metric names);
    `reward`, `min_reward_gain` and its scale: the round's rejection sampling, for the gold of what it keeps (where its
    sources are `helpfulness_rm` and `safety_rm` themselves, as `RewardScorer.load(..., loaded=...)` makes
    them, their scores are computed once for both); `earlier_helpfulness_rms`: round -> a loader of that round's
    helpfulness reward model and tokenizer, each judged on the same gold-ordered pairs
    (`helpfulness_rm_of_round_<r>/*`; loaded one at a time)."""
    if num_samples < 2:
        raise ValueError(f"num_samples: at least 2 (pairs come from two samples), got {num_samples}")
    k = num_samples
    samples = sample_answers(policy, tokenizer, prompts, k, temperature=temperature, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, seed=seed)  # fmt: skip
    answers = [answer for per_prompt in samples for answer in per_prompt]
    messages = [p.messages for p in prompts for _ in range(k)]
    is_safety = torch.tensor([p.is_safety for p in prompts for _ in range(k)])
    source_scores = {}
    if reward is not None:
        source_scores = reward.scores(messages, answers)
        round_rewards = reward.reward(source_scores, is_safety).view(len(prompts), k)

    def rm_scores(name: str, model: Any) -> Scores:  # the round's reward's own score when it is this model's
        source = reward.sources.get(name) if reward is not None else None
        if isinstance(source, LoadedModelSource) and source.model is model:
            return Scores(source_scores[name], source_scores[name].sigmoid())
        return score(model, rm_tokenizer, messages, answers)

    safety = rm_scores("safety", safety_rm).sigmoid
    helpfulness_scores = rm_scores("helpfulness", helpfulness_rm)
    helpful = helpfulness_scores.sigmoid
    rewards = gated_reward(safety, helpful, is_safety, SAFETY_THRESHOLD).view(len(prompts), k)

    oracle, sample, picked, kept = [], [], [], []
    helpful_answers, helpful_golds, helpful_raw, helpful_round_rewards = [], [], [], []
    for i, prompt in enumerate(prompts):
        if prompt.is_safety:
            continue
        candidates = answers[i * k : (i + 1) * k]
        gold = [gold_helpfulness(prompt, a) for a in candidates]
        helpful_answers.append(candidates)
        helpful_golds.append(gold)
        helpful_raw.append(helpfulness_scores.raw[i * k : (i + 1) * k].tolist())
        oracle.append(max(gold))
        sample.append(_mean(gold))
        picked.append(gold[int(rewards[i].argmax())])
        if reward is not None:
            helpful_round_rewards.append(round_rewards[i].tolist())
            index = keep_candidate(candidates, round_rewards[i], min_reward_gain, min_reward_gain_scale)
            if index is not None:
                kept.append(gold[index])
    result = {
        f"ceiling/oracle_best_of_{k}": _mean(oracle),
        "ceiling/one_sample": _mean(sample),
        f"ceiling/rm_best_of_{k}": _mean(picked),
    }
    room = result[f"ceiling/oracle_best_of_{k}"] - result["ceiling/one_sample"]

    def captured(pick: float) -> float:  # the share of the ceiling's gain over one sample that a pick gets
        return (pick - result["ceiling/one_sample"]) / room if room > 0 else float("nan")

    result["ceiling/captured"] = captured(result[f"ceiling/rm_best_of_{k}"])
    if kept:
        result[f"ceiling/kept_best_of_{k}"] = _mean(kept)
        result["ceiling/kept_captured"] = captured(result[f"ceiling/kept_best_of_{k}"])
    result.update(gold_pair_accuracy(helpful_answers, helpful_golds, helpful_raw, "on_policy_helpfulness_rm"))
    if reward is not None:  # the same pairs ranked by what rejection sampling and PPO optimise
        result.update(gold_pair_accuracy(helpful_answers, helpful_golds, helpful_round_rewards, "on_policy_round_reward"))
    # The paper's Fig. 6 asks whether more data makes a better reward model; the pairs above grow harder as the
    # policy improves, so the earlier rounds' models are judged on this round's pairs too.
    helpful_messages = [p.messages for p in prompts if not p.is_safety for _ in range(k)]
    helpful_flat = [answer for per_prompt in helpful_answers for answer in per_prompt]
    for round_number, load in sorted((earlier_helpfulness_rms or {}).items()):
        model, model_tokenizer = load()
        raw = score(model, model_tokenizer, helpful_messages, helpful_flat).raw.view(-1, k)
        result.update(gold_pair_accuracy(helpful_answers, helpful_golds, raw.tolist(),
                                         f"helpfulness_rm_of_round_{round_number}"))  # fmt: skip
        del model

    rng = random.Random(f"diagnostics-{seed}")
    pairs: dict[str, list[dict[str, Any]]] = {"helpfulness": [], "safety": []}
    for i, prompt in enumerate(prompts):
        first, second = answers[i * k], answers[i * k + 1]
        if not first.strip() or not second.strip() or first.strip() == second.strip():
            continue
        target = "safety" if prompt.is_safety else "helpfulness"
        label = annotate(prompt, first, second, target, rng)
        pairs[target].append({"prompt": prompt.messages, **label})
    for target, model in (("helpfulness", helpfulness_rm), ("safety", safety_rm)):
        result.update(reward_model_pair_accuracy(model, rm_tokenizer, pairs[target], f"on_policy_{target}_rm"))
    return result
