"""The knowledge base of the synthetic world: people with a town, a pet, a favorite color and a food.

Everything is drawn from a seeded `random.Random`, so the same seed gives the same world.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black")
PETS = ("cat", "dog", "owl", "goat", "fox", "horse", "crow", "rabbit")
FOODS = ("bread", "apples", "soup", "rice", "cheese", "plums", "honey", "beans")
TOWNS = ("Brindle", "Oskmoor", "Halvet", "Quenby", "Marrow", "Tesk", "Ulden", "Varra")

# attribute -> (values, question, fact sentence); {person} and {value} are filled in.
ATTRIBUTES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "town": (TOWNS, "Where does {person} live?", "{person} lives in {value}."),
    "pet": (PETS, "What pet does {person} have?", "{person} has a pet {value}."),
    "color": (COLORS, "What is the favorite color of {person}?", "The favorite color of {person} is {value}."),
    "food": (FOODS, "What does {person} like to eat?", "{person} likes to eat {value}."),
}

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "n", "r", "l", "s")


@dataclass(frozen=True)
class Person:
    """One entity of the knowledge base."""

    name: str
    town: str
    pet: str
    color: str
    food: str

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)


def make_name(rng: random.Random) -> str:
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(2)]
    return "".join(syllables).capitalize()


def make_people(rng: random.Random, count: int) -> list[Person]:
    """`count` people with distinct names and random attributes."""
    names: list[str] = []
    while len(names) < count:
        name = make_name(rng)
        if name not in names and name not in TOWNS:
            names.append(name)
    return [Person(name, rng.choice(TOWNS), rng.choice(PETS), rng.choice(COLORS), rng.choice(FOODS)) for name in names]
