"""Docker-style container names ("adjective_surname") and overnet's one name rule.

Every name that ends up in DNS, a hosts file or a store key (container, network, service,
alias, endpoint) follows one rule, checked here and only here: a DNS label of 1-63 letters,
digits, '_' or '-', starting with a letter or digit. No dots (a dot would make `web.foobar`
ambiguous), no '/' (names are key segments), no leading '-' (names become arguments).
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

from ..errors import Invalid

T = TypeVar("T")


class Rng(Protocol):
    """What we use of `random` (the module or a random.Random)."""

    def choice(self, seq: Sequence[T]) -> T: ...

    def randint(self, a: int, b: int) -> int: ...


ADJECTIVES: tuple[str, ...] = (
    "admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome",
    "beautiful", "blissful", "bold", "boring", "brave", "busy", "charming", "clever",
    "compassionate", "competent", "condescending", "confident", "cool", "cranky", "crazy",
    "dazzling", "determined", "distracted", "dreamy", "eager", "ecstatic", "elastic", "elated",
    "elegant", "eloquent", "epic", "exciting", "fervent", "festive", "flamboyant", "focused",
    "friendly", "frosty", "funny", "gallant", "gifted", "goofy", "gracious", "great", "happy",
    "hardcore", "heuristic", "hopeful", "hungry", "infallible", "inspiring", "intelligent",
    "interesting", "jolly", "jovial", "keen", "kind", "laughing", "loving", "lucid", "magical",
    "modest", "musing", "mystifying", "naughty", "nervous", "nice", "nifty", "nostalgic",
    "objective", "optimistic", "peaceful", "pedantic", "pensive", "practical", "priceless",
    "quirky", "quizzical", "recursing", "relaxed", "reverent", "romantic", "sad", "serene",
    "sharp", "silly", "sleepy", "stoic", "strange", "stupefied", "suspicious", "sweet",
    "tender", "thirsty", "trusting", "unruffled", "upbeat", "vibrant", "vigilant", "vigorous",
    "wizardly", "wonderful", "xenodochial", "youthful", "zealous", "zen",
)

# Notable scientists, engineers and hackers.
SURNAMES: tuple[str, ...] = (
    "agnesi", "albattani", "allen", "almeida", "antonelli", "archimedes", "ardinghelli",
    "aryabhata", "austin", "babbage", "banach", "banzai", "bardeen", "bartik", "bassi",
    "beaver", "bell", "benz", "bhabha", "bhaskara", "black", "blackburn", "blackwell", "bohr",
    "booth", "borg", "bose", "bouman", "boyd", "brahmagupta", "brattain", "brown", "buck",
    "burnell", "cannon", "carson", "cartwright", "carver", "cerf", "chandrasekhar", "chaplygin",
    "chatelet", "chatterjee", "chaum", "chebyshev", "clarke", "cohen", "colden", "cori", "cray",
    "curie", "curran", "darwin", "davinci", "dewdney", "dhawan", "diffie", "dijkstra", "dirac",
    "driscoll", "dubinsky", "easley", "edison", "einstein", "elbakyan", "elgamal", "elion",
    "ellis", "engelbart", "euclid", "euler", "faraday", "feistel", "fermat", "fermi", "feynman",
    "franklin", "gagarin", "galileo", "galois", "ganguly", "gates", "gauss", "germain",
    "goldberg", "goldstine", "goldwasser", "golick", "goodall", "gould", "greider",
    "grothendieck", "haibt", "hamilton", "haslett", "hawking", "heisenberg", "hellman",
    "hermann", "herschel", "hertz", "heyrovsky", "hodgkin", "hofstadter", "hoover", "hopper",
    "hugle", "hypatia", "ishizaka", "jackson", "jang", "jemison", "jennings", "jepsen",
    "johnson", "joliot", "jones", "kalam", "kapitsa", "kare", "keldysh", "keller", "kepler",
    "khayyam", "khorana", "kilby", "kirch", "knuth", "kowalevski", "lalande", "lamarr",
    "lamport", "leakey", "leavitt", "lederberg", "lehmann", "lewin", "lichterman", "liskov",
    "lovelace", "lumiere", "mahavira", "margulis", "matsumoto", "maxwell", "mayer", "mccarthy",
    "mcclintock", "mclaren", "mclean", "mcnulty", "meitner", "mendel", "mendeleev", "meninsky",
    "merkle", "mestorf", "mirzakhani", "montalcini", "moore", "morse", "moser", "murdock",
    "napier", "nash", "neumann", "newton", "nightingale", "nobel", "noether", "northcutt",
    "noyce", "panini", "pare", "pascal", "pasteur", "payne", "perlman", "pike", "poincare",
    "poitras", "proskuriakova", "ptolemy", "raman", "ramanujan", "rhodes", "ride", "ritchie",
    "robinson", "roentgen", "rosalind", "rubin", "saha", "sammet", "sanderson", "satoshi",
    "shamir", "shannon", "shaw", "shirley", "shockley", "shtern", "sinoussi", "snyder",
    "solomon", "spence", "stonebraker", "sutherland", "swanson", "swartz", "swirles", "taussig",
    "tesla", "tharp", "thompson", "torvalds", "tu", "turing", "varahamihira", "vaughan",
    "villani", "visvesvaraya", "volhard", "wescoff", "wilbur", "wiles", "williams",
    "williamson", "wilson", "wing", "wozniak", "wright", "wu", "yalow", "yonath", "zhukovsky",
)

MAX_NAME = 63
_VALID_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}")
# How much of a refused value an error message repeats: a 1 MB name must not come back whole.
_SHOWN = 80


class InvalidName(Invalid, ValueError):
    """A name breaking the rule: a 400 on the API, and a ValueError for older callers."""

# Random tries before adding a numeric suffix (the tables make ~25,000 combinations).
_PLAIN_TRIES = 10


def _random_name(rng: Rng) -> str:
    while True:
        name = f"{rng.choice(ADJECTIVES)}_{rng.choice(SURNAMES)}"
        if name != "boring_wozniak":  # Steve Wozniak is not boring (Docker's joke, kept)
            return name


def generate_name(taken: Collection[str], rng: Rng = random) -> str:
    """A random "adjective_surname" name not in `taken`; after repeated collisions a numeric
    suffix is added ("adjective_surname7"), so this always terminates."""
    for _ in range(_PLAIN_TRIES):
        name = _random_name(rng)
        if name not in taken:
            return name
    # Crowded: suffixes from a range that grows with each miss, so even a `taken` holding
    # every suffixed variant of a range cannot loop us forever.
    upper = 10
    while True:
        name = f"{_random_name(rng)}{rng.randint(1, upper)}"
        if name not in taken:
            return name
        upper *= 2


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and _VALID_NAME.fullmatch(name) is not None


def shown(value: object) -> str:
    """A value for an error message, cut short when long."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + f"... ({len(text)} characters)"


def check_name(kind: str, name: object) -> str:
    """Return `name` if it follows the rule; else raise InvalidName naming the kind and value
    (`kind` is "container", "network", "service", "alias", ...)."""
    if is_valid_name(name):
        return name  # type: ignore[return-value]
    quoted = repr(shown(name)) if isinstance(name, str) else shown(name)
    raise InvalidName(f"invalid {kind} name {quoted}: use 1-{MAX_NAME} letters, digits, "
                      "'_' or '-', starting with a letter or digit")


def validate_name(name: str) -> str:
    """A user-given container name (kept for older callers): the rule of `check_name`.
    Raises InvalidName, a ValueError."""
    return check_name("container", name)
