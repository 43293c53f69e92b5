"""The offline SYNTHETIC STAND-IN bank for HLE: generated questions, their documents and the split.

This is not Humanity's Last Exam and nothing here is taken from it; scores on this bank
are stand-in results, never HLE results. It exists so that the HLE pipeline (tools,
judges, routers, reports) runs offline and in CI without the gated dataset, on questions
shaped like HLE's: the same fields, the eight categories, both answer types, and split
sizes like the real split (train 1073, val 358, test_id 358, OOD 369 = 193 + 176).

Every answer can be checked exactly. A question is built from one template, and each
template says what a tool contributes:

- ``python_helps``: the answer is a computation (each such question carries
  ``solution_code`` that prints it, so a python tool call can verify it);
- ``search_helps``: the answer depends on a fact about an invented entity that is stated
  only in a generated document (``supporting_doc_ids``); distractor documents describe
  look-alike entities with other values;
- neither: a short closed-book derivation.

The generator is deterministic for a seed: ``python -m harness.benchmarks.hle.bank``
rewrites ``benchmarks/data/hle/`` byte for byte, and the split file records the
content hashes that :func:`load_bank` checks.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import Any

from harness.benchmarks.hle.dataset import (
    CATEGORIES,
    SPLITS,
    HleQuestion,
    split_by_category,
    split_manifest,
)
from harness.benchmarks.hle.search import Document
from harness.config import BENCHMARKS_DIR
from harness.errors import ConfigError

BANK_VERSION = "v1"
BANK_SEED = 20260501
LABEL = "SYNTHETIC STAND-IN for HLE (generated; not Humanity's Last Exam; results on it are not HLE results)"
DATA_DIR = BENCHMARKS_DIR / "data" / "hle"
BANK_FILE = f"bank-{BANK_VERSION}.jsonl.gz"
DOCUMENTS_FILE = f"documents-{BANK_VERSION}.jsonl.gz"
SPLIT_FILE = f"split-{BANK_VERSION}.json"
DOC_URL = "https://stand-in.invalid/hle/"
# Questions per category. The in-distribution six sum to 1789, the real text-only pool's size, in
# proportions resembling HLE's category mix (not its exact counts); the OOD two are the real sizes.
CATEGORY_SIZES = {
    "Math": 950,
    "Biology/Medicine": 220,
    "Computer Science/AI": 220,
    "Physics": 190,
    "Chemistry": 130,
    "Engineering": 79,
    "Humanities/Social Science": 193,
    "Other": 176,
}
MC_OPTIONS = 5
LETTERS = "ABCDE"


@dataclass(frozen=True)
class BankQuestion:
    """One stand-in question: HLE's fields plus what a simulated model needs to know about it."""

    id: str
    question: str
    image: str
    answer: str
    answer_type: str
    rationale: str
    raw_subject: str
    category: str
    template: str
    search_helps: bool
    python_helps: bool
    supporting_doc_ids: tuple[str, ...]
    distractor_doc_ids: tuple[str, ...]
    search_query: str  # what a search for the deciding fact would ask
    solution_code: str  # prints the answer; "" when no computation is involved
    synthetic: bool = True

    def to_hle(self) -> HleQuestion:
        return HleQuestion(
            self.id,
            self.question,
            self.image,
            self.answer,
            self.answer_type,  # type: ignore[arg-type]
            self.rationale,
            self.raw_subject,
            self.category,
        )


@dataclass
class Bank:
    questions: list[BankQuestion]
    documents: list[Document]
    manifest: dict[str, Any]
    _by_id: dict[str, BankQuestion] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {q.id: q for q in self.questions}

    def question(self, question_id: str) -> BankQuestion:
        try:
            return self._by_id[question_id]
        except KeyError:
            raise ConfigError(f"HLE stand-in bank: no question {question_id!r}") from None

    def split(self, name: str) -> list[BankQuestion]:
        if name not in SPLITS:
            raise ConfigError(f"HLE stand-in bank: unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return [self._by_id[i] for i in self.manifest["ids"][name]]


# -- invented names --------------------------------------------------------------------------------

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "th",
    "br",
    "kr",
    "tr",
    "qu",
    "dr",
]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "x", "m", "v"]


class NameForge:
    """Invented, pronounceable, bank-wide unique names (so a name in a question points at one document)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: tuple[int, int] = (2, 3), suffix: str = "") -> str:
        while True:
            count = self.rng.randint(*syllables)
            parts = [
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                for _ in range(count)
            ]
            name = ("".join(parts) + suffix).capitalize()
            if name not in self.used and len(name) >= 5:
                self.used.add(name)
                return name

    def person(self) -> str:
        return f"{self.word((1, 2))} {self.word((2, 3))}"


# -- what a template produces ----------------------------------------------------------------------


@dataclass
class Draft:
    question: str
    answer: str
    rationale: str
    raw_subject: str
    search_helps: bool
    python_helps: bool
    answer_type: str = "exactMatch"
    supporting: list[tuple[str, str]] = field(default_factory=list)  # (title, text)
    distractors: list[tuple[str, str]] = field(default_factory=list)
    method: tuple[str, str] | None = None  # a background page shared by the template's questions
    search_query: str = ""
    solution_code: str = ""


Template = Callable[[random.Random, NameForge], Draft]


def multiple_choice(stem: str, options: list[str], correct: int) -> tuple[str, str]:
    lines = [stem, "", "Answer Choices:"] + [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines), LETTERS[correct]


def shuffled_options(rng: random.Random, right: str, wrong: list[str]) -> tuple[list[str], int]:
    options = [right, *wrong[: MC_OPTIONS - 1]]
    rng.shuffle(options)
    return options, options.index(right)


def numeric_distractors(rng: random.Random, value: int, count: int = MC_OPTIONS - 1) -> list[str]:
    seen = {value}
    out = []
    while len(out) < count:
        candidate = value + rng.choice([-1, 1]) * rng.randint(1, max(3, abs(value) // 4 + 2))
        if candidate > 0 and candidate not in seen:
            seen.add(candidate)
            out.append(str(candidate))
    return out


def primes_between(low: int, high: int) -> int:
    sieve = bytearray([1]) * (high + 1)
    sieve[0:2] = b"\x00\x00"
    for p in range(2, math.isqrt(high) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytearray(len(range(p * p, high + 1, p)))
    return sum(sieve[low + 1 : high])


def entity_page(name: str, kind: str, fact: str, extras: list[str]) -> tuple[str, str]:
    """A short encyclopedia-style page; ``fact`` is the sentence a question turns on."""
    text = " ".join([f"{name} is {kind}.", fact, *extras])
    return name, text


# -- templates: Math -------------------------------------------------------------------------------


def math_prime_count(rng: random.Random, names: NameForge) -> Draft:
    low = rng.randint(1_000, 60_000)
    high = low + rng.randint(200, 3_000)
    count = primes_between(low, high)
    return Draft(
        question=f"How many prime numbers p satisfy {low} < p < {high}?",
        answer=str(count),
        rationale=f"A sieve up to {high} leaves {count} primes strictly between the bounds.",
        raw_subject="Number Theory",
        search_helps=False,
        python_helps=True,
        method=(
            "Counting primes in an interval",
            "The primes in an interval can be counted exactly with a sieve "
            "of Eratosthenes: cross out multiples of each prime up to the square root of the upper bound "
            "and count what remains between the bounds.",
        ),  # fmt: skip
        solution_code=(
            f"low, high = {low}, {high}\nsieve = bytearray([1]) * (high + 1)\nsieve[0:2] = b'\\x00\\x00'\n"
            "for p in range(2, int(high ** 0.5) + 1):\n    if sieve[p]:\n"
            "        sieve[p * p :: p] = bytearray(len(range(p * p, high + 1, p)))\nprint(sum(sieve[low + 1 : high]))"
        ),
    )


def math_digit_sum(rng: random.Random, names: NameForge) -> Draft:
    base, exponent = rng.randint(2, 9), rng.randint(60, 500)
    total = sum(int(d) for d in str(base**exponent))
    return Draft(
        question=f"What is the sum of the decimal digits of {base}^{exponent}?",
        answer=str(total),
        rationale=f"{base}^{exponent} has {len(str(base**exponent))} digits; they add up to {total}.",
        raw_subject="Number Theory",
        search_helps=False,
        python_helps=True,
        method=(
            "Digit sums of large powers",
            "Exact digit sums of large powers need exact integer arithmetic; "
            "floating point loses the low digits long before the number is written out.",
        ),  # fmt: skip
        solution_code=f"print(sum(int(d) for d in str({base} ** {exponent})))",
    )


def math_modpow(rng: random.Random, names: NameForge) -> Draft:
    a, b, m = rng.randint(2, 10**6), rng.randint(10**6, 10**9), rng.randint(10**4, 10**6)
    value = pow(a, b, m)
    return Draft(
        question=f"What is the remainder when {a}^{b} is divided by {m}?",
        answer=str(value),
        rationale=f"Square-and-multiply modulo {m} gives {value}.",
        raw_subject="Number Theory",
        search_helps=False,
        python_helps=True,
        method=(
            "Modular exponentiation",
            "Large modular powers are computed by repeated squaring, reducing "
            "modulo m after every multiplication.",
        ),  # fmt: skip
        solution_code=f"print(pow({a}, {b}, {m}))",
    )


def math_divisors_mc(rng: random.Random, names: NameForge) -> Draft:
    primes = rng.sample([2, 3, 5, 7, 11, 13, 17, 19, 23], rng.randint(3, 5))
    exponents = [rng.randint(1, 4) for _ in primes]
    n = math.prod(p**e for p, e in zip(primes, exponents, strict=True))
    count = math.prod(e + 1 for e in exponents)
    options, right = shuffled_options(rng, str(count), numeric_distractors(rng, count))
    text, letter = multiple_choice(f"How many positive divisors does {n} have?", options, right)
    return Draft(
        question=text,
        answer=letter,
        answer_type="multipleChoice",
        rationale=f"{n} factors with exponents {exponents}; the product of (e + 1) is {count}.",
        raw_subject="Number Theory",
        search_helps=False,
        python_helps=True,
        method=(
            "Counting divisors",
            "If n factors as a product of primes p_i to the powers e_i, it has the "
            "product of (e_i + 1) positive divisors.",
        ),  # fmt: skip
        solution_code=(
            f"n, count = {n}, 1\nfor p in range(2, 30):\n    e = 0\n    while n % p == 0:\n        n //= p\n"
            f"        e += 1\n    count *= e + 1\nassert n == 1\noptions = {options!r}\n"
            f"print('{LETTERS}'[options.index(str(count))])"
        ),
    )


def math_invented_sequence(rng: random.Random, names: NameForge) -> Draft:
    def sequence(name: str) -> tuple[tuple[int, int, int, int], str]:
        params = (rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 5), rng.choice([-3, -2, -1, 1, 2, 3]))
        x0, x1, c1, c2 = params
        author = names.person()
        fact = (f"It starts with x(0) = {x0} and x(1) = {x1}, and every later term is "
                f"x(n) = {c1}*x(n-1) + ({c2})*x(n-2).")  # fmt: skip
        extras = [f"The sequence was introduced by {author} in a note on linear recurrences.",
                  "Like every second-order linear recurrence, its terms grow roughly geometrically."]  # fmt: skip
        return params, entity_page(f"The {name} sequence", "an integer sequence defined by a linear recurrence",
                                   fact, extras)[1]  # fmt: skip

    name = names.word(suffix="")
    (x0, x1, c1, c2), text = sequence(name)
    k = rng.randint(12, 40)
    terms = [x0, x1]
    for _ in range(k - 1):
        terms.append(c1 * terms[-1] + c2 * terms[-2])
    distractors = []
    for _ in range(2):
        other = names.word()
        distractors.append((f"The {other} sequence", sequence(other)[1]))
    return Draft(
        question=f"What is the term x({k}) of the {name} sequence?",
        answer=str(terms[k]),
        rationale=f"The {name} sequence's recurrence (x0={x0}, x1={x1}, x(n)={c1}x(n-1)+({c2})x(n-2)) "
        f"gives x({k}) = {terms[k]}.",
        raw_subject="Combinatorics",
        search_helps=True,
        python_helps=True,
        supporting=[(f"The {name} sequence", text)],
        distractors=distractors,
        search_query=f"{name} sequence",
        solution_code=(
            f"a, b = {x0}, {x1}\nfor _ in range({k} - 1):\n    a, b = b, {c1} * b + ({c2}) * a\nprint(b)"
        ),  # fmt: skip
    )


def math_polygon_angles(rng: random.Random, names: NameForge) -> Draft:
    sides = rng.randint(5, 400)
    return Draft(
        question=f"What is the sum, in degrees, of the interior angles of a convex polygon with {sides} sides?",
        answer=str((sides - 2) * 180),
        rationale=f"A convex n-gon splits into n - 2 triangles: ({sides} - 2) * 180 = {(sides - 2) * 180}.",
        raw_subject="Geometry",
        search_helps=False,
        python_helps=False,
        method=(
            "Angles of polygons",
            "Diagonals from one vertex cut a convex polygon into triangles, which is "
            "how its interior angle sum is found.",
        ),  # fmt: skip
    )


def math_complete_graph_mc(rng: random.Random, names: NameForge) -> Draft:
    n = rng.randint(6, 120)
    edges = n * (n - 1) // 2
    options, right = shuffled_options(rng, str(edges), numeric_distractors(rng, edges))
    text, letter = multiple_choice(
        f"How many edges does the complete graph on {n} vertices have?", options, right
    )
    return Draft(
        question=text,
        answer=letter,
        answer_type="multipleChoice",
        rationale=f"Every pair of the {n} vertices is joined once: {n}*{n - 1}/2 = {edges}.",
        raw_subject="Graph Theory",
        search_helps=False,
        python_helps=False,
        method=(
            "Complete graphs",
            "In a complete graph every pair of distinct vertices is joined by exactly one edge.",
        ),  # fmt: skip
    )


# -- templates: Physics ----------------------------------------------------------------------------


def physics_kinetic_energy(rng: random.Random, names: NameForge) -> Draft:
    mass, speed = rng.randint(2, 5_000), rng.randint(3, 900)
    energy = Fraction(mass * speed * speed, 2)
    answer = str(energy.numerator) if energy.denominator == 1 else f"{float(energy):.1f}"
    return Draft(
        question=f"A body of mass {mass} kg moves at {speed} m/s. What is its kinetic energy in joules "
        "(non-relativistic)?",
        answer=answer,
        rationale=f"E = m v^2 / 2 = {mass} * {speed}^2 / 2 = {answer} J.",
        raw_subject="Classical Mechanics",
        search_helps=False,
        python_helps=True,
        method=(
            "Kinetic energy",
            "The non-relativistic kinetic energy of a body is half its mass times the square of its speed.",
        ),  # fmt: skip
        solution_code=f"e = {mass} * {speed} ** 2\nprint(e // 2 if e % 2 == 0 else e / 2)",
    )


def physics_material_heat(rng: random.Random, names: NameForge) -> Draft:
    def material() -> tuple[str, int, str]:
        name = names.word((2, 2), suffix="ite")
        c = rng.randint(90, 4_000)
        extras = [f"It was first described by the {names.word()} Institute of Materials.",
                  f"Samples of {name} are grey and brittle at room temperature."]  # fmt: skip
        return name, c, entity_page(name, "a synthetic ceramic", f"The specific heat capacity of {name} is "
                                    f"{c} J/(kg*K).", extras)[1]  # fmt: skip

    name, c, text = material()
    mass, delta = rng.randint(1, 60), rng.randint(2, 90)
    distractors = [(n, t) for n, _, t in (material() for _ in range(2))]
    return Draft(
        question=f"How many joules are needed to raise the temperature of {mass} kg of {name} by {delta} K?",
        answer=str(mass * c * delta),
        rationale=f"Q = m c dT with c = {c} J/(kg*K) for {name}: {mass} * {c} * {delta} = {mass * c * delta} J.",
        raw_subject="Thermodynamics",
        search_helps=True,
        python_helps=True,
        supporting=[(name, text)],
        distractors=distractors,
        search_query=f"{name} specific heat capacity",
        solution_code=f"print({mass} * {c} * {delta})",
    )


def physics_particle_mass(rng: random.Random, names: NameForge) -> Draft:
    def particle() -> tuple[str, int, str]:
        name = names.word((2, 2), suffix="on")
        mass = rng.randint(100, 90_000)
        extras = [f"It was reported by the {names.word()} collaboration.",
                  f"The {name} decays mostly into lighter hadrons."]  # fmt: skip
        return name, mass, entity_page(name, "a hypothetical unstable particle",
                                       f"The rest mass of the {name} is {mass} MeV/c^2.", extras)[1]  # fmt: skip

    name, mass, text = particle()
    return Draft(
        question=f"What is the rest mass of the {name}, in MeV/c^2?",
        answer=str(mass),
        rationale=f"The {name}'s catalogue entry gives {mass} MeV/c^2.",
        raw_subject="Particle Physics",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (particle() for _ in range(2))],
        search_query=f"{name} rest mass",
    )


def physics_particle_charge_mc(rng: random.Random, names: NameForge) -> Draft:
    charges = ["-2e", "-1e", "0", "+1e", "+2e"]

    def particle() -> tuple[str, str, str]:
        name = names.word((2, 2), suffix="ino")
        charge = rng.choice(charges)
        extras = [
            f"The {name} was proposed in the {names.word()} model.",
            "It has never been produced directly.",
        ]
        return name, charge, entity_page(name, "a hypothetical particle",
                                         f"The electric charge of the {name} is {charge}.", extras)[1]  # fmt: skip

    name, charge, text = particle()
    options = list(charges)
    text_q, letter = multiple_choice(
        f"What is the electric charge of the {name}?", options, options.index(charge)
    )
    return Draft(
        question=text_q,
        answer=letter,
        answer_type="multipleChoice",
        rationale=f"The {name} carries {charge}.",
        raw_subject="Particle Physics",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (particle() for _ in range(2))],
        search_query=f"{name} electric charge",
    )


def physics_arcseconds(rng: random.Random, names: NameForge) -> Draft:
    degrees = rng.randint(2, 360)
    return Draft(
        question=f"How many seconds of arc are there in {degrees} degrees?",
        answer=str(degrees * 3600),
        rationale=f"One degree is 3600 arcseconds: {degrees} * 3600 = {degrees * 3600}.",
        raw_subject="Astronomy",
        search_helps=False,
        python_helps=False,
        method=("Angular units", "A degree has sixty minutes of arc and each minute sixty seconds of arc."),
    )


# -- templates: Computer Science/AI ----------------------------------------------------------------


def cs_popcount(rng: random.Random, names: NameForge) -> Draft:
    n = rng.randint(10**9, 10**15)
    return Draft(
        question=f"How many 1 bits does the binary representation of {n} contain?",
        answer=str(bin(n).count("1")),
        rationale=f"{n} in binary is {bin(n)[2:]}.",
        raw_subject="Computer Science",
        search_helps=False,
        python_helps=True,
        method=(
            "Population count",
            "The population count of an integer is the number of ones in its binary representation.",
        ),  # fmt: skip
        solution_code=f"print(bin({n}).count('1'))",
    )


def cs_no_adjacent_ones(rng: random.Random, names: NameForge) -> Draft:
    n = rng.randint(15, 80)
    a, b = 1, 2  # strings of length 0 and 1
    for _ in range(n - 1):
        a, b = b, a + b
    return Draft(
        question=f"How many binary strings of length {n} contain no two adjacent 1s?",
        answer=str(b),
        rationale="The count obeys f(n) = f(n-1) + f(n-2) with f(0) = 1, f(1) = 2 (Fibonacci shifted by two).",
        raw_subject="Combinatorics",
        search_helps=False,
        python_helps=True,
        method=(
            "Strings without adjacent ones",
            "Binary strings without two adjacent ones are counted by a "
            "Fibonacci-type recurrence on the last character.",
        ),  # fmt: skip
        solution_code=f"a, b = 1, 2\nfor _ in range({n} - 1):\n    a, b = b, a + b\nprint(b)",
    )


def cs_language_year(rng: random.Random, names: NameForge) -> Draft:
    def language() -> tuple[str, int, str]:
        name = names.word((2, 2))
        year = rng.randint(1961, 2023)
        extras = [f"{name} was designed by {names.person()} for {rng.choice(['embedded', 'numeric', 'logic', 'web'])} "
                  "programming.", f"Its compiler is written in {name} itself."]  # fmt: skip
        return name, year, entity_page(name, "a programming language",
                                       f"The first public release of {name} was in {year}.", extras)[1]  # fmt: skip

    name, year, text = language()
    return Draft(
        question=f"In which year was the programming language {name} first publicly released?",
        answer=str(year),
        rationale=f"{name}'s history records its first public release in {year}.",
        raw_subject="Computer Science",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (language() for _ in range(2))],
        search_query=f"{name} programming language first release",
    )


def cs_invented_hash(rng: random.Random, names: NameForge) -> Draft:
    def hash_page() -> tuple[str, tuple[int, int, int], str]:
        name = names.word((2, 2), suffix="-h")
        a, b, m = rng.randint(3, 10**5), rng.randint(0, 10**5), rng.randint(10**5, 10**7)
        extras = [
            f"{name} is used in the {names.word()} key-value store.",
            "It is not cryptographically secure.",
        ]
        return name, (a, b, m), entity_page(name, "a simple hash function",
                                            f"For an integer x, {name}(x) = ({a}*x + {b}) mod {m}.", extras)[1]  # fmt: skip

    name, (a, b, m), text = hash_page()
    x = rng.randint(10**6, 10**12)
    return Draft(
        question=f"What is {name}({x})?",
        answer=str((a * x + b) % m),
        rationale=f"{name}(x) = ({a}x + {b}) mod {m}, so {name}({x}) = {(a * x + b) % m}.",
        raw_subject="Computer Science",
        search_helps=True,
        python_helps=True,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (hash_page() for _ in range(2))],
        search_query=f"{name} hash function definition",
        solution_code=f"print(({a} * {x} + {b}) % {m})",
    )


def cs_catalan_mc(rng: random.Random, names: NameForge) -> Draft:
    n = rng.randint(6, 30)
    value = math.comb(2 * n, n) // (n + 1)
    options, right = shuffled_options(rng, str(value), numeric_distractors(rng, value))
    text, letter = multiple_choice(
        f"How many structurally different full binary trees have exactly {n + 1} leaves?", options, right
    )
    return Draft(
        question=text,
        answer=letter,
        answer_type="multipleChoice",
        rationale=f"Full binary trees with n + 1 leaves are counted by the Catalan number C({n}) = {value}.",
        raw_subject="Computer Science",
        search_helps=False,
        python_helps=True,
        method=(
            "Catalan numbers",
            "The Catalan numbers C(n) = binomial(2n, n) / (n + 1) count full binary trees, "
            "balanced parentheses and many other structures.",
        ),  # fmt: skip
        solution_code=f"from math import comb\nv = comb({2 * n}, {n}) // {n + 1}\noptions = {options!r}\n"
        f"print('{LETTERS}'[options.index(str(v))])",
    )


def cs_full_tree_nodes(rng: random.Random, names: NameForge) -> Draft:
    height = rng.randint(3, 30)
    return Draft(
        question=f"A perfect binary tree has height {height} (a single root has height 0). How many nodes does "
        "it have?",
        answer=str(2 ** (height + 1) - 1),
        rationale=f"Levels 0..{height} hold 2^0 + ... + 2^{height} = 2^{height + 1} - 1 nodes.",
        raw_subject="Computer Science",
        search_helps=False,
        python_helps=False,
        method=(
            "Perfect binary trees",
            "In a perfect binary tree every level is full, so level k holds 2^k nodes.",
        ),  # fmt: skip
    )


# -- templates: Biology/Medicine -------------------------------------------------------------------


def bio_chromosomes(rng: random.Random, names: NameForge) -> Draft:
    def species() -> tuple[str, int, str]:
        name = f"{names.word((2, 2))} {names.word((2, 3), suffix='a').lower()}"
        count = 2 * rng.randint(4, 60)
        extras = [
            f"It lives in the {names.word()} wetlands.",
            f"{name} was first collected by {names.person()}.",
        ]
        return name, count, entity_page(name, "a fictional moth species",
                                        f"Its somatic cells carry {count} chromosomes (2n = {count}).", extras)[1]  # fmt: skip

    name, count, text = species()
    return Draft(
        question=f"How many chromosomes are in a somatic cell of the moth {name}?",
        answer=str(count),
        rationale=f"The species description of {name} gives 2n = {count}.",
        raw_subject="Genetics",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (species() for _ in range(2))],
        search_query=f"{name} chromosomes",
    )


def bio_doubling(rng: random.Random, names: NameForge) -> Draft:
    start, hours, doublings = rng.randint(10, 5_000), rng.randint(1, 9), rng.randint(5, 40)
    return Draft(
        question=f"A culture starts with {start} cells and doubles every {hours} hours without limit. How many "
        f"cells are there after {hours * doublings} hours?",
        answer=str(start * 2**doublings),
        rationale=f"{hours * doublings} hours are {doublings} doublings: {start} * 2^{doublings}.",
        raw_subject="Microbiology",
        search_helps=False,
        python_helps=True,
        method=(
            "Exponential growth",
            "A population that doubles every d hours multiplies by 2^(t/d) in t hours.",
        ),
        solution_code=f"print({start} * 2 ** ({hours * doublings} // {hours}))",
    )


def bio_drug_target_mc(rng: random.Random, names: NameForge) -> Draft:
    organs = ["liver", "kidney", "heart", "lung", "pancreas", "thyroid", "spleen"]

    def drug() -> tuple[str, str, str]:
        name = names.word((2, 2), suffix="ine").lower().capitalize()
        organ = rng.choice(organs)
        extras = [f"{name} was developed at the {names.word()} clinic.", "It is taken orally once a day."]
        return (
            name,
            organ,
            entity_page(name, "a fictional drug", f"{name} acts mainly on the {organ}.", extras)[1],
        )

    name, organ, text = drug()
    options, right = shuffled_options(rng, organ, [o for o in organs if o != organ])
    question, letter = multiple_choice(f"Which organ does the drug {name} act on mainly?", options, right)
    return Draft(
        question=question,
        answer=letter,
        answer_type="multipleChoice",
        rationale=f"{name}'s monograph names the {organ}.",
        raw_subject="Pharmacology",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (drug() for _ in range(2))],
        search_query=f"{name} drug acts on",
    )


def bio_half_life(rng: random.Random, names: NameForge) -> Draft:
    def drug() -> tuple[str, int, str]:
        name = names.word((2, 2), suffix="ol").lower().capitalize()
        half = rng.randint(2, 30)
        extras = [f"{name} is given by injection.", f"Trials of {name} ran at {names.word()} hospital."]
        return name, half, entity_page(name, "a fictional medicine",
                                       f"The elimination half-life of {name} is {half} hours.", extras)[1]  # fmt: skip

    name, half, text = drug()
    k = rng.randint(1, 6)
    dose = rng.randint(1, 40) * 2**k
    return Draft(
        question=f"A patient receives a single {dose} mg dose of {name}. Assuming first-order elimination, how "
        f"many mg remain after {half * k} hours?",
        answer=str(dose // 2**k),
        rationale=f"{name} has a {half} h half-life: {half * k} h is {k} half-lives, {dose} / 2^{k}.",
        raw_subject="Pharmacology",
        search_helps=True,
        python_helps=True,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (drug() for _ in range(2))],
        search_query=f"{name} half-life",
        solution_code=f"print({dose} // 2 ** ({half * k} // {half}))",
    )


def bio_codons(rng: random.Random, names: NameForge) -> Draft:
    letters, length = rng.randint(2, 8), rng.randint(2, 6)
    return Draft(
        question=f"A genetic alphabet has {letters} letters and codons of length {length}. How many distinct "
        "codons are possible?",
        answer=str(letters**length),
        rationale=f"Each of {length} positions takes one of {letters} letters: {letters}^{length}.",
        raw_subject="Molecular Biology",
        search_helps=False,
        python_helps=False,
        method=("Codons", "A codon is an ordered string of nucleotide letters read as a unit."),
    )


# -- templates: Chemistry --------------------------------------------------------------------------

ATOMIC_MASSES = {"H": 1, "C": 12, "N": 14, "O": 16, "S": 32, "P": 31, "Cl": 35}


def chem_molar_mass(rng: random.Random, names: NameForge) -> Draft:
    elements = rng.sample(list(ATOMIC_MASSES), rng.randint(3, 5))
    counts = {e: rng.randint(1, 24) for e in elements}
    formula = "".join(f"{e}{n if n > 1 else ''}" for e, n in counts.items())
    mass = sum(ATOMIC_MASSES[e] * n for e, n in counts.items())
    given = ", ".join(f"{e} = {ATOMIC_MASSES[e]}" for e in elements)
    return Draft(
        question=f"Using the atomic masses {given} (g/mol), what is the molar mass of {formula} in g/mol?",
        answer=str(mass),
        rationale=f"Summing atomic masses times counts for {formula} gives {mass} g/mol.",
        raw_subject="Chemistry",
        search_helps=False,
        python_helps=True,
        method=("Molar mass", "The molar mass of a compound is the sum of its atoms' atomic masses."),
        solution_code=f"masses = {ATOMIC_MASSES!r}\ncounts = {counts!r}\nprint(sum(masses[e] * n for e, n in "
        "counts.items()))",
    )


def chem_melting_point(rng: random.Random, names: NameForge) -> Draft:
    def compound() -> tuple[str, int, str]:
        name = names.word((2, 3), suffix="ide").lower()
        point = rng.randint(-150, 2_400)
        extras = [
            f"It was first made by {names.person()}.",
            f"Crystals of {name} are {rng.choice(['red', 'pale', 'dark'])}.",
        ]
        return name, point, entity_page(name, "a fictional inorganic compound",
                                        f"The melting point of {name} is {point} degrees Celsius.", extras)[1]  # fmt: skip

    name, point, text = compound()
    return Draft(
        question=f"What is the melting point of {name}, in degrees Celsius?",
        answer=str(point),
        rationale=f"The data sheet for {name} lists {point} C.",
        raw_subject="Inorganic Chemistry",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (compound() for _ in range(2))],
        search_query=f"{name} melting point",
    )


def chem_invented_element(rng: random.Random, names: NameForge) -> Draft:
    def element() -> tuple[str, int, str]:
        name = names.word((2, 2), suffix="ium")
        mass = rng.randint(20, 300)
        extras = [
            f"{name} was isolated at the {names.word()} laboratory.",
            f"{name} is a soft, reactive metal.",
        ]
        return name, mass, entity_page(name, "a fictional chemical element",
                                       f"The atomic mass of {name} is {mass} g/mol.", extras)[1]  # fmt: skip

    name, mass, text = element()
    x, y = rng.randint(1, 3), rng.randint(1, 5)
    oxide = f"{name}{x if x > 1 else ''}O{y if y > 1 else ''}"
    return Draft(
        question=f"Taking O = 16 g/mol, what is the molar mass in g/mol of the oxide {oxide} of the element {name}?",
        answer=str(x * mass + 16 * y),
        rationale=f"{name} has atomic mass {mass}: {x}*{mass} + {y}*16 = {x * mass + 16 * y}.",
        raw_subject="Inorganic Chemistry",
        search_helps=True,
        python_helps=True,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (element() for _ in range(2))],
        search_query=f"{name} atomic mass",
        solution_code=f"print({x} * {mass} + 16 * {y})",
    )


def chem_colour_mc(rng: random.Random, names: NameForge) -> Draft:
    colours = ["violet", "yellow", "green", "blue", "orange", "colourless", "black"]

    def salt() -> tuple[str, str, str]:
        name = names.word((2, 3), suffix="ate").lower()
        colour = rng.choice(colours)
        extras = ["It dissolves readily in water.", f"{name} is prepared from {names.word().lower()} ore."]
        return (
            name,
            colour,
            entity_page(name, "a fictional salt", f"Crystals of {name} are {colour}.", extras)[1],
        )

    name, colour, text = salt()
    options, right = shuffled_options(rng, colour, [c for c in colours if c != colour])
    question, letter = multiple_choice(f"What colour are crystals of {name}?", options, right)
    return Draft(
        question=question,
        answer=letter,
        answer_type="multipleChoice",
        rationale=f"The description of {name} says its crystals are {colour}.",
        raw_subject="Inorganic Chemistry",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (salt() for _ in range(2))],
        search_query=f"{name} crystals colour",
    )


def chem_methane_oxygen(rng: random.Random, names: NameForge) -> Draft:
    moles = rng.randint(2, 500)
    return Draft(
        question=f"How many moles of O2 are consumed when {moles} mol of methane burn completely to CO2 and water?",
        answer=str(2 * moles),
        rationale=f"CH4 + 2 O2 -> CO2 + 2 H2O, so {moles} mol need {2 * moles} mol O2.",
        raw_subject="Chemistry",
        search_helps=False,
        python_helps=False,
        method=(
            "Combustion of alkanes",
            "Complete combustion turns a hydrocarbon into carbon dioxide and water.",
        ),
    )


# -- templates: Engineering ------------------------------------------------------------------------

_PARALLEL_PAIRS = [(1, 1), (3, 6), (4, 12), (10, 15), (6, 3), (12, 4), (20, 5), (30, 6)]


def eng_resistors(rng: random.Random, names: NameForge) -> Draft:
    a, b = rng.choice(_PARALLEL_PAIRS)
    scale = rng.randint(1, 40) * (2 if (a, b) == (1, 1) else 1)
    r1, r2, r3 = rng.randint(1, 999), a * scale, b * scale
    total = r1 + r2 * r3 // (r2 + r3)
    return Draft(
        question=f"A {r1} ohm resistor is in series with the parallel combination of {r2} ohm and {r3} ohm "
        "resistors. What is the total resistance in ohms?",
        answer=str(total),
        rationale=f"{r2} || {r3} = {r2 * r3 // (r2 + r3)} ohm; plus {r1} ohm gives {total} ohm.",
        raw_subject="Electrical Engineering",
        search_helps=False,
        python_helps=True,
        method=(
            "Resistor networks",
            "Series resistances add; parallel resistances combine as the reciprocal of "
            "the sum of reciprocals.",
        ),  # fmt: skip
        solution_code=f"print(round({r1} + 1 / (1 / {r2} + 1 / {r3})))",
    )


def eng_alloy_load(rng: random.Random, names: NameForge) -> Draft:
    def alloy() -> tuple[str, int, str]:
        name = f"{names.word((2, 2))} {rng.choice(['bronze', 'steel', 'brass'])}"
        strength = rng.randint(80, 1_800)
        extras = [
            f"{name} is made by the {names.word()} foundry.",
            f"It is used for {rng.choice(['bolts', 'rails', 'springs'])}.",
        ]
        return name, strength, entity_page(name, "a fictional alloy",
                                           f"The yield strength of {name} is {strength} MPa.", extras)[1]  # fmt: skip

    name, strength, text = alloy()
    area = rng.randint(2, 900)
    return Draft(
        question=f"A rod of {name} has a cross-section of {area} mm^2. What axial load in newtons makes it reach "
        "its yield strength?",
        answer=str(strength * area),
        rationale=f"{name} yields at {strength} MPa = {strength} N/mm^2; times {area} mm^2 = {strength * area} N.",
        raw_subject="Mechanical Engineering",
        search_helps=True,
        python_helps=True,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (alloy() for _ in range(2))],
        search_query=f"{name} yield strength",
        solution_code=f"print({strength} * {area})",
    )


def eng_standard_voltage_mc(rng: random.Random, names: NameForge) -> Draft:
    voltages = ["12 V", "24 V", "48 V", "110 V", "230 V", "400 V", "11 kV"]

    def standard() -> tuple[str, str, str]:
        name = f"{names.word((2, 2)).upper()[:4]}-{rng.randint(100, 999)}"
        while name in names.used:
            name = f"{names.word((2, 2)).upper()[:4]}-{rng.randint(100, 999)}"
        names.used.add(name)
        voltage = rng.choice(voltages)
        extras = [
            f"{name} was issued by the {names.word()} standards board.",
            "It covers cabling and connectors.",
        ]
        return name, voltage, entity_page(name, "a fictional electrical standard",
                                          f"{name} specifies a nominal supply of {voltage}.", extras)[1]  # fmt: skip

    name, voltage, text = standard()
    options, right = shuffled_options(rng, voltage, [v for v in voltages if v != voltage])
    question, letter = multiple_choice(
        f"Which nominal supply voltage does the standard {name} specify?", options, right
    )
    return Draft(
        question=question,
        answer=letter,
        answer_type="multipleChoice",
        rationale=f"{name} specifies {voltage}.",
        raw_subject="Electrical Engineering",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (standard() for _ in range(2))],
        search_query=f"{name} standard nominal supply voltage",
    )


def eng_gear_train(rng: random.Random, names: NameForge) -> Draft:
    t1, t2 = rng.choice([(10, 40), (12, 36), (15, 45), (20, 60), (16, 48), (18, 54), (14, 28)])
    t3, t4 = rng.choice([(10, 20), (12, 48), (25, 50), (11, 33), (13, 39)])
    rpm = (t2 // t1) * (t4 // t3) * rng.randint(1, 40)
    out = rpm * t1 * t3 // (t2 * t4)
    return Draft(
        question=f"A motor turns a {t1}-tooth gear at {rpm} rpm. It meshes with a {t2}-tooth gear, on whose shaft "
        f"a {t3}-tooth gear drives a {t4}-tooth output gear. What is the output speed in rpm?",
        answer=str(out),
        rationale=f"Speed ratio ({t1}/{t2}) * ({t3}/{t4}): {rpm} rpm becomes {out} rpm.",
        raw_subject="Mechanical Engineering",
        search_helps=False,
        python_helps=True,
        method=("Gear trains", "Meshing gears turn at speeds inversely proportional to their tooth counts."),
        solution_code=f"print({rpm} * {t1} * {t3} // ({t2} * {t4}))",
    )


def eng_address_bits(rng: random.Random, names: NameForge) -> Draft:
    k = rng.randint(8, 64)
    return Draft(
        question=f"How many address bits are needed to address each byte of a memory of 2^{k} bytes?",
        answer=str(k),
        rationale=f"2^{k} distinct addresses need {k} bits.",
        raw_subject="Computer Engineering",
        search_helps=False,
        python_helps=False,
        method=("Address width", "An n-bit address distinguishes 2^n locations."),
    )


# -- templates: Humanities/Social Science ----------------------------------------------------------


def hum_founding_year(rng: random.Random, names: NameForge) -> Draft:
    def city() -> tuple[str, int, str]:
        name = names.word((2, 3))
        year = rng.randint(800, 1950)
        extras = [
            f"{name} lies on the {names.word()} river.",
            f"Its first charter was granted by {names.person()}.",
        ]
        return (
            name,
            year,
            entity_page(name, "a fictional river town", f"{name} was founded in {year}.", extras)[1],
        )

    name, year, text = city()
    return Draft(
        question=f"In which year was the town of {name} founded?",
        answer=str(year),
        rationale=f"The chronicle of {name} dates its founding to {year}.",
        raw_subject="History",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (city() for _ in range(2))],
        search_query=f"{name} town founded",
    )


def hum_years_between(rng: random.Random, names: NameForge) -> Draft:
    def treaty() -> tuple[str, int, str]:
        name = f"Treaty of {names.word((2, 3))}"
        year = rng.randint(1100, 1990)
        extras = [
            "It ended a border dispute between two fictional duchies.",
            f"It was drafted by {names.person()}.",
        ]
        return (
            name,
            year,
            entity_page(name, "a fictional peace treaty", f"The {name} was signed in {year}.", extras)[1],
        )

    (first, y1, t1), (second, y2, t2) = treaty(), treaty()
    return Draft(
        question=f"How many years passed between the signing of the {first} and the signing of the {second}?",
        answer=str(abs(y2 - y1)),
        rationale=f"The {first} dates from {y1} and the {second} from {y2}: {abs(y2 - y1)} years apart.",
        raw_subject="History",
        search_helps=True,
        python_helps=False,
        supporting=[(first, t1), (second, t2)],
        distractors=[(n, t) for n, _, t in (treaty() for _ in range(2))],
        search_query=f"{first} signed; {second} signed",
    )


def hum_author_mc(rng: random.Random, names: NameForge) -> Draft:
    authors = [names.person() for _ in range(MC_OPTIONS)]

    def epic(author: str) -> tuple[str, str]:
        title = f"The Song of {names.word((2, 3))}"
        extras = [f"It runs to {rng.randint(3, 60)} cantos.", "It survives in a single manuscript."]
        return title, entity_page(
            title, "a fictional epic poem", f"{title} was written by {author}.", extras
        )[1]

    right = rng.randrange(MC_OPTIONS)
    title, text = epic(authors[right])
    distractors = [epic(authors[i]) for i in rng.sample([i for i in range(MC_OPTIONS) if i != right], 2)]
    question, letter = multiple_choice(f"Who wrote the epic poem {title}?", authors, right)
    return Draft(
        question=question,
        answer=letter,
        answer_type="multipleChoice",
        rationale=f"{title} is attributed to {authors[right]}.",
        raw_subject="Literature",
        search_helps=True,
        python_helps=False,
        supporting=[(title, text)],
        distractors=distractors,
        search_query=f"{title} written by",
    )


def hum_weekday(rng: random.Random, names: NameForge) -> Draft:
    day = date(rng.randint(1600, 2099), rng.randint(1, 12), rng.randint(1, 28))
    weekday = day.strftime("%A")
    return Draft(
        question=f"On which day of the week did {day.day} {day.strftime('%B')} {day.year} fall "
        "(proleptic Gregorian calendar)?",
        answer=weekday,
        rationale=f"Counting days in the Gregorian calendar, {day.isoformat()} was a {weekday}.",
        raw_subject="History",
        search_helps=False,
        python_helps=True,
        method=(
            "Day of the week",
            "The weekday of a Gregorian date follows from counting days modulo seven from a known date.",
        ),  # fmt: skip
        solution_code=f"import datetime\nprint(datetime.date({day.year}, {day.month}, {day.day}).strftime('%A'))",
    )


def hum_capital(rng: random.Random, names: NameForge) -> Draft:
    def province() -> tuple[str, str, str]:
        name, capital = names.word((2, 3)), names.word((2, 3))
        extras = [f"{name} is known for its {rng.choice(['vineyards', 'mines', 'monasteries'])}.",
                  f"Its governor in the old records is {names.person()}."]  # fmt: skip
        return (
            name,
            capital,
            entity_page(name, "a fictional province", f"The capital of {name} is {capital}.", extras)[1],
        )

    name, capital, text = province()
    return Draft(
        question=f"What is the capital of the province of {name}?",
        answer=capital,
        rationale=f"The gazetteer names {capital} as the capital of {name}.",
        raw_subject="Geography",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (province() for _ in range(2))],
        search_query=f"capital of {name} province",
    )


# -- templates: Other ------------------------------------------------------------------------------


def other_sport_players(rng: random.Random, names: NameForge) -> Draft:
    def sport() -> tuple[str, int, str]:
        name = names.word((2, 2), suffix="ball")
        players = rng.randint(3, 18)
        extras = [f"{name} is played on a {rng.choice(['round', 'long', 'sunken'])} field.",
                  f"Its rules were written down by {names.person()}."]  # fmt: skip
        return name, players, entity_page(name, "a fictional team sport",
                                          f"A {name} team fields {players} players.", extras)[1]  # fmt: skip

    name, players, text = sport()
    return Draft(
        question=f"How many players does one team field in a game of {name}?",
        answer=str(players),
        rationale=f"The rules of {name} set {players} players per side.",
        raw_subject="Sports",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (sport() for _ in range(2))],
        search_query=f"{name} team players",
    )


def other_coin_change(rng: random.Random, names: NameForge) -> Draft:
    amount = rng.randint(50, 1_000)
    coins = rng.choice([(1, 5, 10, 25), (1, 2, 5, 10), (1, 5, 10, 20, 50), (1, 3, 7)])
    ways = [1] + [0] * amount
    for coin in coins:
        for value in range(coin, amount + 1):
            ways[value] += ways[value - coin]
    return Draft(
        question=f"In how many ways can {amount} cents be paid with coins of {', '.join(map(str, coins))} cents "
        "(order does not matter, any number of each coin)?",
        answer=str(ways[amount]),
        rationale=f"Dynamic programming over the coins {coins} gives {ways[amount]} ways.",
        raw_subject="Puzzles",
        search_helps=False,
        python_helps=True,
        method=(
            "Counting change",
            "The number of ways to make an amount from coin values is computed by dynamic "
            "programming, adding one coin value at a time.",
        ),  # fmt: skip
        solution_code=f"ways = [1] + [0] * {amount}\nfor c in {coins!r}:\n    for v in range(c, {amount} + 1):\n"
        f"        ways[v] += ways[v - c]\nprint(ways[{amount}])",
    )


def other_festival_mc(rng: random.Random, names: NameForge) -> Draft:
    months = ["January", "March", "May", "June", "August", "October", "December"]

    def festival() -> tuple[str, str, str]:
        name = f"{names.word((2, 3))} festival"
        month = rng.choice(months)
        extras = [
            f"It celebrates the {names.word().lower()} harvest.",
            "Lanterns are floated on the last night.",
        ]
        return (
            name,
            month,
            entity_page(name, "a fictional festival", f"The {name} is held every {month}.", extras)[1],
        )

    name, month, text = festival()
    options, right = shuffled_options(rng, month, [m for m in months if m != month])
    question, letter = multiple_choice(f"In which month is the {name} held?", options, right)
    return Draft(
        question=question,
        answer=letter,
        answer_type="multipleChoice",
        rationale=f"The {name} takes place in {month}.",
        raw_subject="Culture",
        search_helps=True,
        python_helps=False,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (festival() for _ in range(2))],
        search_query=f"{name} held month",
    )


def other_league_games(rng: random.Random, names: NameForge) -> Draft:
    def league() -> tuple[str, int, str]:
        name = f"{names.word((2, 3))} League"
        teams = rng.randint(4, 40)
        extras = [f"The {name} was founded by {names.person()}.", "Its season runs through the winter."]
        return name, teams, entity_page(name, "a fictional sports league",
                                        f"The {name} has {teams} member teams.", extras)[1]  # fmt: skip

    name, teams, text = league()
    return Draft(
        question=f"In a double round-robin season of the {name} (every team hosts every other team once), how "
        "many games are played?",
        answer=str(teams * (teams - 1)),
        rationale=f"The {name} has {teams} teams: {teams} * {teams - 1} ordered pairings.",
        raw_subject="Sports",
        search_helps=True,
        python_helps=True,
        supporting=[(name, text)],
        distractors=[(n, t) for n, _, t in (league() for _ in range(2))],
        search_query=f"{name} member teams",
        solution_code=f"print({teams} * ({teams} - 1))",
    )


def other_minutes(rng: random.Random, names: NameForge) -> Draft:
    days = rng.randint(2, 365)
    return Draft(
        question=f"How many minutes are there in {days} days?",
        answer=str(days * 1440),
        rationale=f"A day has 1440 minutes: {days} * 1440.",
        raw_subject="Puzzles",
        search_helps=False,
        python_helps=False,
        method=("Units of time", "A day has 24 hours and an hour has 60 minutes."),
    )


# -- the recipe ------------------------------------------------------------------------------------

# (template, weight) per category: the weights set each category's mix of tool needs and answer types.
RECIPE: dict[str, list[tuple[Template, int]]] = {
    "Math": [
        (math_prime_count, 4), (math_digit_sum, 3), (math_modpow, 3), (math_divisors_mc, 3),
        (math_invented_sequence, 4), (math_polygon_angles, 2), (math_complete_graph_mc, 1),
    ],
    "Physics": [
        (physics_kinetic_energy, 3), (physics_material_heat, 4), (physics_particle_mass, 3),
        (physics_particle_charge_mc, 2), (physics_arcseconds, 1),
    ],
    "Computer Science/AI": [
        (cs_popcount, 2), (cs_no_adjacent_ones, 2), (cs_language_year, 3), (cs_invented_hash, 3),
        (cs_catalan_mc, 2), (cs_full_tree_nodes, 1),
    ],
    "Biology/Medicine": [
        (bio_chromosomes, 4), (bio_doubling, 2), (bio_drug_target_mc, 3), (bio_half_life, 3), (bio_codons, 1),
    ],
    "Chemistry": [
        (chem_molar_mass, 3), (chem_melting_point, 3), (chem_invented_element, 3), (chem_colour_mc, 2),
        (chem_methane_oxygen, 1),
    ],
    "Engineering": [
        (eng_resistors, 3), (eng_alloy_load, 3), (eng_standard_voltage_mc, 2), (eng_gear_train, 2),
        (eng_address_bits, 1),
    ],
    "Humanities/Social Science": [
        (hum_founding_year, 4), (hum_years_between, 3), (hum_author_mc, 3), (hum_weekday, 2), (hum_capital, 3),
    ],
    "Other": [
        (other_sport_players, 3), (other_coin_change, 3), (other_festival_mc, 2), (other_league_games, 3),
        (other_minutes, 1),
    ],
}  # fmt: skip


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def generate(seed: int = BANK_SEED) -> Bank:
    """The whole bank, a pure function of ``seed``."""
    forge = NameForge(random.Random(f"{seed}:names"))
    drafts: list[tuple[str, int, str, Draft]] = []
    for category in CATEGORIES:
        rng = random.Random(f"{seed}:{category}")
        templates = [t for t, _ in RECIPE[category]]
        weights = [w for _, w in RECIPE[category]]
        for index in range(CATEGORY_SIZES[category]):
            template = rng.choices(templates, weights=weights)[0]
            drafts.append((category, index, template.__name__, template(rng, forge)))

    documents: dict[str, Document] = {}

    def add_document(kind: str, title: str, text: str) -> str:
        doc_id = "doc-" + _digest(seed, kind, title)[:16]
        if doc_id in documents:
            raise AssertionError(f"document id collision for {title!r}")
        documents[doc_id] = Document(doc_id, DOC_URL + doc_id, title, text)
        return doc_id

    # One background page per template that has one, shared by its questions.
    method_docs: dict[str, str] = {}
    method_category: dict[str, str] = {}
    for category, _, name, draft in drafts:
        if draft.method is not None and name not in method_docs:
            method_docs[name] = add_document("method", *draft.method)
            method_category[name] = category
    pick = random.Random(f"{seed}:distractors")
    questions: list[BankQuestion] = []
    for category, index, name, draft in drafts:
        supporting = [add_document("fact", title, text) for title, text in draft.supporting]
        if name in method_docs:
            supporting.append(method_docs[name])
        distractors = [add_document("distractor", title, text) for title, text in draft.distractors]
        if not distractors:  # computation and closed-book questions: other templates' background pages
            near = [d for t, d in method_docs.items() if t != name and method_category[t] == category]
            far = [d for t, d in method_docs.items() if method_category[t] != category]
            pick.shuffle(near)
            pick.shuffle(far)
            distractors = (near + far)[:2]
        questions.append(
            BankQuestion(
                id="syn-" + _digest(seed, category, index)[:20],
                question=draft.question,
                image="",
                answer=draft.answer,
                answer_type=draft.answer_type,
                rationale=draft.rationale,
                raw_subject=draft.raw_subject,
                category=category,
                template=name,
                search_helps=draft.search_helps,
                python_helps=draft.python_helps,
                supporting_doc_ids=tuple(supporting),
                distractor_doc_ids=tuple(distractors),
                search_query=draft.search_query or draft.question.split("\n")[0],
                solution_code=draft.solution_code,
            )
        )
    ordered_docs = sorted(documents.values(), key=lambda d: d.id)
    manifest = split_manifest(
        split_by_category(questions),
        label=LABEL,
        bank_version=BANK_VERSION,
        generator_seed=seed,
        category_sizes=CATEGORY_SIZES,
        questions=len(questions),
        documents=len(ordered_docs),
        regenerate="python -m harness.benchmarks.hle.bank",
    )
    bank = Bank(questions, ordered_docs, manifest)
    manifest["content_sha256"] = {
        BANK_FILE: hashlib.sha256(questions_jsonl(bank)).hexdigest(),
        DOCUMENTS_FILE: hashlib.sha256(documents_jsonl(bank)).hexdigest(),
    }
    return bank


# -- files -----------------------------------------------------------------------------------------


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows).encode()


def questions_jsonl(bank: Bank) -> bytes:
    return _jsonl([asdict(q) for q in bank.questions])


def documents_jsonl(bank: Bank) -> bytes:
    return _jsonl([asdict(d) for d in bank.documents])


def manifest_json(bank: Bank) -> bytes:
    return (json.dumps(bank.manifest, indent=1, ensure_ascii=False) + "\n").encode()


def write_bank(bank: Bank, directory: Path = DATA_DIR) -> list[Path]:
    """Writes the three files atomically; gzip with mtime 0 so the bytes depend on the content alone."""
    directory.mkdir(parents=True, exist_ok=True)
    outputs = {
        BANK_FILE: gzip.compress(questions_jsonl(bank), compresslevel=9, mtime=0),
        DOCUMENTS_FILE: gzip.compress(documents_jsonl(bank), compresslevel=9, mtime=0),
        SPLIT_FILE: manifest_json(bank),
    }
    paths = []
    for name, data in outputs.items():
        path = directory / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        paths.append(path)
    return paths


def load_bank(directory: Path = DATA_DIR) -> Bank:
    """The committed bank, checked against the content hashes its split file records."""
    try:
        manifest = json.loads((directory / SPLIT_FILE).read_text(encoding="utf-8"))
        raw_questions = gzip.decompress((directory / BANK_FILE).read_bytes())
        raw_documents = gzip.decompress((directory / DOCUMENTS_FILE).read_bytes())
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(
            f"HLE stand-in bank in {directory}: cannot read it ({exc}); regenerate it with "
            "python -m harness.benchmarks.hle.bank"
        ) from None
    for name, raw in ((BANK_FILE, raw_questions), (DOCUMENTS_FILE, raw_documents)):
        if hashlib.sha256(raw).hexdigest() != manifest.get("content_sha256", {}).get(name):
            raise ConfigError(
                f"HLE stand-in bank: {directory / name} does not match the hash in {SPLIT_FILE}; regenerate it "
                "with python -m harness.benchmarks.hle.bank"
            )
    questions = []
    for line in raw_questions.decode("utf-8").splitlines():
        row = json.loads(line)
        row["supporting_doc_ids"] = tuple(row["supporting_doc_ids"])
        row["distractor_doc_ids"] = tuple(row["distractor_doc_ids"])
        questions.append(BankQuestion(**row))
    documents = [Document(**json.loads(line)) for line in raw_documents.decode("utf-8").splitlines()]
    return Bank(questions, documents, manifest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m harness.benchmarks.hle.bank",
        description="Regenerate the synthetic HLE stand-in bank (not HLE data) deterministically.",
    )
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"output directory (default {DATA_DIR})")
    parser.add_argument("--seed", type=int, default=BANK_SEED)
    args = parser.parse_args(argv)
    bank = generate(args.seed)
    for path in write_bank(bank, args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    sizes = ", ".join(f"{k} {v}" for k, v in bank.manifest["sizes"].items())
    print(f"{LABEL}: {len(bank.questions)} questions ({sizes}), {len(bank.documents)} documents")


if __name__ == "__main__":
    main()
