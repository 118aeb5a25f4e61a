from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from typing import TypeVar

import pytest

from overnet.runtime.names import ADJECTIVES, SURNAMES, generate_name, validate_name

T = TypeVar("T")


def test_tables_are_docker_like() -> None:
    assert len(ADJECTIVES) >= 90 and len(SURNAMES) >= 200
    assert len(set(ADJECTIVES)) == len(ADJECTIVES) and len(set(SURNAMES)) == len(SURNAMES)
    assert all(re.fullmatch(r"[a-z]+", w) for w in ADJECTIVES + SURNAMES)
    assert {"admiring", "adoring", "awesome"} <= set(ADJECTIVES)
    assert {"albattani", "allen", "almeida", "turing"} <= set(SURNAMES)


def test_format_and_validity() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        name = generate_name((), rng)
        adj, _, surname = name.partition("_")
        assert adj in ADJECTIVES and surname in SURNAMES
        assert validate_name(name) == name


class _Scripted:
    """An rng whose choices are scripted, to steer generate_name."""

    def __init__(self, picks: Sequence[str], number: int = 4) -> None:
        self.picks = list(picks)
        self.number = number

    def choice(self, seq: Sequence[T]) -> T:
        pick = self.picks.pop(0)
        assert pick in seq
        return pick  # type: ignore[return-value]

    def randint(self, a: int, b: int) -> int:
        return self.number


def test_never_boring_wozniak() -> None:
    rng = _Scripted(["boring", "wozniak", "boring", "turing"])
    assert generate_name((), rng) == "boring_turing"


def test_retries_on_collision() -> None:
    rng = _Scripted(["happy", "turing", "happy", "turing", "sad", "knuth"])
    assert generate_name({"happy_turing"}, rng) == "sad_knuth"


def test_suffix_when_crowded() -> None:
    taken = {"happy_turing"}
    rng = _Scripted(["happy", "turing"] * 11, number=7)
    assert generate_name(taken, rng) == "happy_turing7"


def test_unique_even_when_everything_is_taken() -> None:
    every = {f"{a}_{s}" for a, s in itertools.product(ADJECTIVES, SURNAMES)}
    rng = random.Random(2)
    name = generate_name(every, rng)
    assert name not in every and re.fullmatch(r"[a-z]+_[a-z]+\d+", name)
    # And with every one-digit suffix taken too, it still terminates with a fresh name.
    crowded = every | {f"{n}{i}" for n in every for i in range(1, 11)}
    name = generate_name(crowded, rng)
    assert name not in crowded and validate_name(name) == name


def test_many_names_are_distinct() -> None:
    rng = random.Random(3)
    taken: set[str] = set()
    for _ in range(3000):
        name = generate_name(taken, rng)
        assert name not in taken
        taken.add(name)


@pytest.mark.parametrize("name", ["web", "ab", "a1", "0db", "my-app_1.2", "A.B-C_d", "x" * 200])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


def test_leading_slash_is_accepted_and_dropped() -> None:
    assert validate_name("/web") == "web"


@pytest.mark.parametrize("name", ["", "a", "/", "/a", "-web", "_web", ".web", "web app", "wéb",
                                  "web/1", "web\n", "web:1", "we$b", "//web"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_name(name)
    assert str(err.value) == (
        f'invalid container name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
