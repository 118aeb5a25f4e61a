from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from typing import TypeVar

import pytest

from overnet.errors import Invalid
from overnet.runtime.names import (ADJECTIVES, SURNAMES, InvalidName, check_name,
                                     generate_name, validate_name)

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


@pytest.mark.parametrize("name", ["web", "a", "a1", "0db", "my-app_1", "A-B-C_d", "x" * 63,
                                  "web_"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name
    assert check_name("network", name) == name


@pytest.mark.parametrize("name", ["", "/", "/a", "/web", "-web", "_web", ".web", "web app", "wéb",
                                  "web/1", "web\n", "web:1", "we$b", "//web", "my-app_1.2",
                                  "x" * 64, "web.foobar"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_name(name)
    assert str(err.value) == (
        f"invalid container name {name!r}: use 1-63 letters, digits, '_' or '-', "
        "starting with a letter or digit")


@pytest.mark.parametrize("value", [123, None, ["web"], True])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidName, match=re.escape(f"invalid alias name {value!r}")):
        check_name("alias", value)


def test_error_names_the_kind_and_is_a_400() -> None:
    with pytest.raises(Invalid) as err:
        check_name("service", "a.b")
    assert err.value.status == 400
    assert str(err.value).startswith("invalid service name 'a.b'")


def test_long_values_are_cut_in_messages() -> None:
    with pytest.raises(InvalidName) as err:
        check_name("container", "x" * 1_000_000)
    assert len(str(err.value)) < 300 and "1000000 characters" in str(err.value)
