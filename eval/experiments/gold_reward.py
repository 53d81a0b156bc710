"""A perfect judge for one diagnostic run: the world's gold scorers as the rounds' reward (issue 33).

Not a method. The demo's loop scores answers with reward models trained from the annotator's noisy labels;
this reward function reads the world's answer key instead, so that a run with it measures how far the same loop
(rejection sampling, its fine-tune, PPO) could take the policy if its judge were never wrong: the loop's own
ceiling, against which the reward models' share can be read. Used as a function source of a reward spec
(align.reward_sources), for example:

    align round 5 --name oracle --reward '{"combine": "weighted_sum", "sources": {"gold": {"function":
        "eval.experiments.gold_reward:gold_reward"}}}' \
        --ppo.value_model runs/oracle/round-0/reward_model_helpfulness/final

(PPO's value model starts from a helpfulness reward model, and this reward has none: name the run's own round-0
one, which exists by the time PPO starts.)

An answer's reward is its gold helpfulness when it is safe (gold safety >= 0.5, the world's violation line)
and gold helpfulness - 1 when it is not, so that best-of-K never keeps a violation a safe answer could replace.
It is not `align.world.gold_reward` (the gold counterpart of the gated R_c that PPO logs), which scores every
safe answer to a safety prompt 1.0: a judge that cannot tell a bare refusal of a borderline prompt from its
helpful answer would keep the false refusals this run is meant to see past.
The world's seed is read from ALIGN_GOLD_WORLD_SEED (default 0): set it to the run's --world_seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from align.rounds.ppo import PPO_PROMPT_SEED_BASE
from align.world import World
from align.world.gold import gold_helpfulness, is_violation
from align.world.tasks import WorldPrompt

# The draws the rounds make of world train prompts (align/rounds/): rejection sampling 200 a round (prompt seed =
# the round), PPO 1,024 (prompt seed = PPO_PROMPT_SEED_BASE + the round); sizes from the stage YAMLs under
# align/configs/rlhf_round/.
PROMPT_DRAWS = [(200, n) for n in range(11)] + [(1024, PPO_PROMPT_SEED_BASE + n) for n in range(11)]

_by_messages: dict[str, WorldPrompt] = {}


def _key(messages: Sequence[dict[str, str]]) -> str:
    return json.dumps([[m["role"], m["content"].strip()] for m in messages])


def _world_prompt(messages: Sequence[dict[str, str]]) -> WorldPrompt:
    """The world prompt whose messages these are (its answer key is what the gold scorers read)."""
    if not _by_messages:
        world = World(seed=int(os.environ.get("ALIGN_GOLD_WORLD_SEED", "0")))
        for count, seed in PROMPT_DRAWS:
            for prompt in world.prompts(count, "train", seed=seed):
                _by_messages.setdefault(_key(prompt.messages), prompt)
    found = _by_messages.get(_key(messages))
    if found is None:
        raise ValueError(f"not a world train prompt of the rounds' draws: {messages[-1]['content']!r:.80}")
    return found


def gold_reward(prompts: Sequence[Sequence[dict[str, str]]], answers: Sequence[str]) -> list[float]:
    """Gold helpfulness of each answer, minus 1 when it breaks the world's safety line."""
    rewards = []
    for messages, answer in zip(prompts, answers):
        prompt = _world_prompt(messages)
        rewards.append(gold_helpfulness(prompt, answer) - (1.0 if is_violation(prompt, answer) else 0.0))
    return rewards
