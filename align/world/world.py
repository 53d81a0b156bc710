"""`World`: the seeded synthetic world, and everything built from it.

    world = World(seed=0)
    world.corpus(n)                    pretraining documents (facts, arithmetic, stories, dialogues)
    world.prompts(n, split, seed)      WorldPrompts of every kind, held-out split fixed by question text
    world.respond(prompt, quality)     an answer of a chosen quality ("good", "near", "wrong", "refusal", ...)
    world.sft_dialogues(n, ...)        SFT demonstrations, Ghost Attention dialogues among them
    world.preference_pairs(...)        pairs labelled by the simulated annotator, from world answers or any policy

The same seed gives the same people; every method takes its own seed, so outputs are reproducible piece by
piece. See data/README.md for the rules.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..data.gatt import build_gatt_dialogue
from .annotator import annotate_ranking
from .gold import LIST_CATEGORIES
from .knowledge import ATTRIBUTES, COLORS, FOODS, PETS, TOWNS, Person, make_people
from .tasks import (
    BORDERLINE,
    FILLER_SENTENCE,
    FORMATS,
    HARMFUL,
    KINDS,
    NUMBER_WORDS,
    OPERATIONS,
    SYSTEM_RULES,
    WorldPrompt,
    apply_format,
    degraded_answer,
    split_of,
    task_answer,
    task_question,
)

DEFAULT_PROMPT_MIX = {
    "arithmetic": 0.22,
    "fact": 0.22,
    "list": 0.08,
    "format": 0.1,
    "system": 0.1,
    "harmful": 0.14,
    "borderline": 0.14,
}
# The prompts of each preference data set: helpfulness pairs on helpfulness prompts, safety pairs on safety ones.
TARGET_PROMPT_MIX = {
    "helpfulness": {"arithmetic": 0.3, "fact": 0.3, "list": 0.1, "format": 0.15, "system": 0.15},
    "safety": {"harmful": 0.5, "borderline": 0.5},
}
MAX_OPERAND = 12
TEST_FRACTION = 0.2
MAX_SPLIT_MISSES = 10_000
# Responses of each quality that make up the world's own preference data (before any policy samples).
DEFAULT_QUALITY_MIX = {
    "good": 0.25,
    "padded": 0.1,
    "near": 0.25,
    "wrong": 0.12,
    "refusal": 0.1,
    "harmful": 0.1,
    "unformatted": 0.08,
}

# Filler is added to this share of the world's own answers whatever their quality, so that reward models
# learn that padding is a (negligible) cost, not a sign of a right answer ("padded" answers are all right ones).
PADDING_RATE = 0.15
# The slip a careless demonstration writer makes on each kind of prompt (`sft_dialogues(careless_fraction=...)`):
# misjudging which prompts to refuse (refusing plain and borderline questions, complying with harmful ones) and
# ignoring format instructions and system rules. Each slip is visible in the answer itself, so reward models
# learn to see it in one pass, and the rounds can learn not to make it (Llama 2's annotators too judged answers
# better than they wrote them, docs/method.md §5; false refusals and violations are its §4.2.3/§4.4 measures).
CARELESS_QUALITY = {
    "arithmetic": "refusal",
    "fact": "refusal",
    "list": "refusal",
    "format": "unformatted",
    "system": "unformatted",
    "borderline": "refusal",
    "harmful": "harmful",
}

ResponseSampler = Callable[[WorldPrompt, int], Sequence[str]]


class World:
    """The synthetic world of seed `seed`: `num_people` people and the tasks, scorers and data built on them."""

    def __init__(self, seed: int = 0, num_people: int = 24) -> None:
        self.seed = seed
        self.people: list[Person] = make_people(random.Random(f"people-{seed}"), num_people)
        self.by_name = {person.name: person for person in self.people}

    # ---- prompts -------------------------------------------------------------------------------------------
    def _task_key(self, task: str, rng: random.Random) -> dict[str, Any]:
        person = rng.choice(self.people)
        slots = {"person": person.name, "pet": person.pet, "food": person.food, "town": person.town}
        if task == "arithmetic":
            op = rng.choice(sorted(OPERATIONS))
            a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
            if op == "minus" and b > a:
                a, b = b, a  # results stay non-negative
            if op == "times":
                a, b = a % 7, b % 7
            return {"task": task, "a": a, "b": b, "op": op, "answer": OPERATIONS[op](a, b)}
        if task == "fact":
            attribute = rng.choice(sorted(ATTRIBUTES))
            return {"task": task, "person": person.name, "attribute": attribute, "value": person.value(attribute)}
        if task == "list":
            return {"task": task, "category": rng.choice(sorted(LIST_CATEGORIES)), "count": rng.choice([2, 3, 4])}
        if task == "harmful":
            return {"task": task, "category": rng.choice(sorted(HARMFUL)), "slots": slots}
        if task == "borderline":
            template = rng.choice(sorted(BORDERLINE))
            return {"task": task, "template": template, "keywords": BORDERLINE[template][2], "slots": slots}
        raise ValueError(f"task: unknown task {task!r}")

    def make_prompt(self, kind: str, rng: random.Random) -> WorldPrompt:
        """One prompt of `kind` (see `KINDS`)."""
        if kind not in KINDS:
            raise ValueError(f"kind: unknown prompt kind {kind!r}, expected one of {list(KINDS)}")
        base_task = rng.choice(["arithmetic", "fact", "list"]) if kind in ("format", "system") else kind
        key = self._task_key(base_task, rng)
        question = task_question(key)
        messages: list[dict[str, str]] = []
        if kind == "format":
            key["format"] = rng.choice(sorted(FORMATS))
            key["max_words"] = rng.choice([8, 10])
            question = f"{question} {FORMATS[key['format']].format(max_words=key['max_words'])}"
        if kind == "system":
            key["rule"] = rng.choice(sorted(SYSTEM_RULES))
            earlier = self._task_key(rng.choice(["arithmetic", "fact"]), rng)
            earlier["rule"] = key["rule"]
            messages = [
                {"role": "system", "content": SYSTEM_RULES[key["rule"]]},
                {"role": "user", "content": task_question(earlier)},
                {"role": "assistant", "content": apply_format(earlier, task_answer(earlier, rng))},
            ]
        messages.append({"role": "user", "content": question})
        is_safety = kind in ("harmful", "borderline")
        return WorldPrompt(id="", kind=kind, messages=messages, is_safety=is_safety, key=key)

    def prompts(
        self, count: int, split: str = "train", seed: int = 0, mix: dict[str, float] | None = None
    ) -> list[WorldPrompt]:
        """`count` prompts of the split ("train" or "test"; fixed by a hash of each user turn's text)."""
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        mix = mix or DEFAULT_PROMPT_MIX
        rng = random.Random(f"prompts-{self.seed}-{split}-{seed}")
        kinds, weights = zip(*sorted(mix.items()))
        result, misses = [], 0
        while len(result) < count:
            prompt = self.make_prompt(rng.choices(kinds, weights)[0], rng)
            # Every user turn belongs to the split, so no test question is seen in training, not even as context.
            if all(split_of(m["content"], TEST_FRACTION) == split for m in prompt.messages if m["role"] == "user"):
                prompt.id = f"{split}-{seed}-{len(result)}"
                result.append(prompt)
                misses = 0
            elif (misses := misses + 1) > MAX_SPLIT_MISSES:  # e.g. the few list questions may all be train ones
                raise ValueError(
                    f"prompts: no {split} question in {MAX_SPLIT_MISSES} draws of the mix {dict(mix)}; "
                    "a mix of only a few distinct questions may have none in this split"
                )
        return result

    # ---- answers -------------------------------------------------------------------------------------------
    def respond(
        self, prompt: WorldPrompt, quality: str = "good", rng: random.Random | None = None, pad: bool = False
    ) -> str:
        """An answer of the given quality; "unformatted" is a good answer that ignores format and system rule,
        "padded" a good answer followed by filler (negligibly worse). `pad` adds the filler to an answer of
        any quality but a refusal or harmful compliance."""
        rng = rng or random.Random(0)
        key = prompt.key
        if quality == "padded":
            quality, pad = "good", True
        filler = f" {FILLER_SENTENCE}" if pad and quality not in ("refusal", "harmful") else ""
        if quality == "unformatted":
            answer = task_answer(key, rng) + filler
            # 8 words and a sentence of preamble: over any word limit, and a second sentence
            preamble = "Let me think about that for a moment."
            return f"{preamble} {answer}" if key.get("format") in ("short", "sentence") else answer
        answer = task_answer(key, rng) if quality == "good" else degraded_answer(key, quality, rng, self.people)
        return apply_format(key, answer + filler)

    def reference_assistant(self, messages: Sequence[dict[str, str]]) -> str:
        """The world's scripted chat model: answers the last user turn of any world question, keeping a system
        rule or an instruction written before the question (the Ghost Attention sampler of the world)."""
        text = messages[-1]["content"]
        instruction, _, question = text.rpartition("\n\n")
        rule_texts = [m["content"] for m in messages if m["role"] == "system"] + [instruction]
        rule = next((name for name, rule in SYSTEM_RULES.items() if any(rule == t for t in rule_texts)), None)
        key = self.key_of_question(question)
        return apply_format({**key, "rule": rule}, task_answer(key, random.Random(question)))

    def key_of_question(self, question: str) -> dict[str, Any]:
        """The answer key of a plain world question (arithmetic, fact or list); ValueError otherwise."""
        for person in self.people:
            for attribute, (_, template, _) in ATTRIBUTES.items():
                if template.format(person=person.name) == question:
                    return {
                        "task": "fact",
                        "person": person.name,
                        "attribute": attribute,
                        "value": person.value(attribute),
                    }
        words = question.rstrip("?.").split()
        if len(words) == 5 and words[:2] == ["What", "is"] and words[3] in OPERATIONS:
            a, b = int(words[2]), int(words[4])
            return {"task": "arithmetic", "a": a, "b": b, "op": words[3], "answer": OPERATIONS[words[3]](a, b)}
        for count, word in NUMBER_WORDS.items():
            for category in LIST_CATEGORIES:
                if question == f"Name {word} {category}.":
                    return {"task": "list", "category": category, "count": count}
        raise ValueError(f"reference_assistant: not a world question: {question!r}")

    # ---- data sets -----------------------------------------------------------------------------------------
    def sft_dialogues(
        self,
        count: int,
        seed: int = 0,
        safety_fraction: float = 0.1,
        gatt_fraction: float = 0.15,
        careless_fraction: float = 0.0,
    ) -> list[dict[str, Any]]:
        """SFT demonstrations `{"messages", "loss_on"}` on train prompts: best answers (loss on every answer); a
        `gatt_fraction` of multi-turn Ghost Attention dialogues (docs/method.md §4) sampled from
        `reference_assistant`, trained on their last answer only; `safety_fraction` of safety prompts (kept
        small by default, so that the RLHF rounds have safety left to learn). A `careless_fraction` of the
        single-prompt demonstrations carry their kind's slip (`CARELESS_QUALITY`) instead of the best answer."""
        if not 0 <= careless_fraction <= 1:
            raise ValueError(f"careless_fraction: must be in [0, 1], got {careless_fraction}")
        rng = random.Random(f"sft-{self.seed}-{seed}")
        slips = random.Random(f"sft-slips-{self.seed}-{seed}")  # its own stream: fraction 0 keeps the old data
        helpful_mix = {k: v for k, v in DEFAULT_PROMPT_MIX.items() if k not in ("harmful", "borderline")}
        dialogues = []
        pool = iter(self.prompts(count * 2, "train", seed=10_000 + seed, mix=helpful_mix))
        safety_pool = iter(self.prompts(count, "train", seed=20_000 + seed, mix={"harmful": 0.5, "borderline": 0.5}))
        for _ in range(count):
            draw = rng.random()
            if draw < gatt_fraction:
                turns = [self._train_question(rng) for _ in range(rng.randint(2, 3))]
                rule = SYSTEM_RULES[rng.choice(sorted(SYSTEM_RULES))]
                dialogues.append(
                    {"messages": build_gatt_dialogue(turns, rule, self.reference_assistant), "loss_on": "last"}
                )
                continue
            prompt = next(safety_pool) if draw < gatt_fraction + safety_fraction else next(pool)
            quality = CARELESS_QUALITY[prompt.kind] if slips.random() < careless_fraction else "good"
            answer_rng = random.Random(rng.random())  # slips draw differently: the next prompts must not change
            answer = {"role": "assistant", "content": self.respond(prompt, quality, answer_rng)}
            dialogues.append({"messages": [*prompt.messages, answer], "loss_on": "all"})
        return dialogues

    def _train_question(self, rng: random.Random) -> str:
        while True:
            question = task_question(self._task_key(rng.choice(["arithmetic", "fact", "list"]), rng))
            if split_of(question, TEST_FRACTION) == "train":
                return question

    def preference_pairs(
        self,
        prompts: Sequence[WorldPrompt],
        target: str,
        seed: int = 0,
        sampler: ResponseSampler | None = None,
        quality_mix: dict[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """One labelled pair per prompt, in the record format `align.data.load_preferences` reads.

        Answers come from `sampler(prompt, 2)` (any policy; it may return more than two, which the annotator
        ranks: the pair is its best against its worst) or, by default, from `respond` at qualities drawn from
        `quality_mix`, a `PADDING_RATE` share of them padded. Prompts with fewer than two different, non-empty
        answers give no pair.
        """
        rng = random.Random(f"pairs-{self.seed}-{target}-{seed}")
        qualities, weights = zip(*sorted((quality_mix or DEFAULT_QUALITY_MIX).items()))
        pairs = []
        for prompt in prompts:
            if sampler is None:
                answers = [
                    self.respond(prompt, rng.choices(qualities, weights)[0], rng, pad=rng.random() < PADDING_RATE)
                    for _ in range(2)
                ]
            else:
                answers = list(sampler(prompt, 2))
            distinct, seen = [], set()
            for answer in answers:
                if answer.strip() and answer.strip() not in seen:
                    seen.add(answer.strip())
                    distinct.append(answer)
            if len(distinct) < 2:
                continue  # a pair needs two different, non-empty answers
            label = annotate_ranking(prompt, distinct, target, rng)
            pairs.append(
                {
                    "prompt": prompt.messages,
                    "chosen": [{"role": "assistant", "content": label["chosen"]}],
                    "rejected": [{"role": "assistant", "content": label["rejected"]}],
                    "strength": label["strength"],
                    "is_safety": prompt.is_safety,
                    "source": f"world-{self.seed}:{prompt.id}",
                }
            )
        return pairs

    # ---- pretraining corpus --------------------------------------------------------------------------------
    def corpus(self, num_documents: int, seed: int = 0) -> Iterator[str]:
        """Pretraining documents: profiles, arithmetic, everyday stories, a few villain and refusal stories
        (the harmful instructions a web corpus would hold), and plain-text dialogues."""
        rng = random.Random(f"corpus-{self.seed}-{seed}")
        makers = [
            (0.25, self._profile),
            (0.25, self._arithmetic),
            (0.2, self._story),
            (0.05, self._villain_story),
            (0.05, self._refusal_story),
            (0.2, self._dialogue),
        ]
        weights, functions = zip(*makers)
        for _ in range(num_documents):
            yield rng.choices(functions, weights)[0](rng)

    def _profile(self, rng: random.Random) -> str:
        person = rng.choice(self.people)
        facts = [
            template.format(person=person.name, value=person.value(attribute))
            for attribute, (_, _, template) in ATTRIBUTES.items()
        ]
        rng.shuffle(facts)
        return " ".join(facts)

    def _arithmetic(self, rng: random.Random) -> str:
        lines = []
        for _ in range(rng.randint(4, 8)):
            key = self._task_key("arithmetic", rng)
            lines.append(task_answer(key, rng))
        return " ".join(lines)

    def _story(self, rng: random.Random) -> str:
        person, friend = rng.sample(self.people, 2)
        return (
            f"One morning {person.name} left {person.town} with a {person.pet}. "
            f"{person.name} wore {person.color} and carried some {person.food}. "
            f"On the road {person.name} met {friend.name}, who lives in {friend.town}. "
            f"{friend.name} has a pet {friend.pet} and likes to eat {friend.food}. "
            f"They shared {rng.choice(FOODS)} and talked about {rng.choice(COLORS)} {rng.choice(PETS)}s "
            f"from {rng.choice(TOWNS)}."
        )

    def _villain_story(self, rng: random.Random) -> str:
        person = rng.choice(self.people)
        category = rng.choice(sorted(HARMFUL))
        slots = {"person": person.name, "pet": person.pet, "food": person.food, "town": person.town}
        request, compliance, _ = HARMFUL[category]
        return f"A villain asked: {request.format(**slots)} His friend said: {compliance.format(**slots)}"

    def _refusal_story(self, rng: random.Random) -> str:
        person = rng.choice(self.people)
        category = rng.choice(sorted(HARMFUL))
        slots = {"person": person.name, "pet": person.pet, "food": person.food, "town": person.town}
        request, _, redirect = HARMFUL[category]
        return f"Someone asked the wise owl: {request.format(**slots)} The owl said: I can't help with that. " + (
            redirect.format(**slots)
        )

    def _dialogue(self, rng: random.Random) -> str:
        lines = []
        for _ in range(rng.randint(1, 3)):
            prompt = self.make_prompt(rng.choice(["arithmetic", "arithmetic", "fact", "list", "borderline"]), rng)
            lines.append(f"User: {prompt.question}\nAssistant: {self.respond(prompt, 'good', rng)}")
        return "\n".join(lines)
