"""Small Python functions with tests, for task fine-tuning on code, generated in HumanEval's shape.

    llama2 data build-task code --output DIR          # DIR/train.jsonl + DIR/humaneval/HumanEval.jsonl

Each problem is one function of a family (add, multiply, maximum, reverse a string, count a
character, ...) with a varied name, parameter names and docstring, and a doctest example and test
asserts whose expected values are computed by the family's reference function. Two shapes come out
of one `CodeProblem`, as HumanEval (Chen et al., 2021) frames them:

- the held-out set, in HumanEval's own layout, which `llama2 eval run --tasks humaneval` reads:
  `{"task_id", "prompt": signature + docstring, "canonical_solution": body, "test": "def check(candidate): ...",
  "entry_point"}`;
- the training pair (`train_pair`): the prompt and the body that completes it.

A problem's key is its family, name, parameters and docstring wording (not its example values);
`chat_tasks.is_heldout_key` holds out a fixed tenth of the keys, so no held-out function appears in
the training set under any example values.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llama2.data.chat_tasks import WORDS, draw

__all__ = ["Family", "FAMILIES", "CodeProblem", "generate_problem", "humaneval_record", "train_pair"]

TESTS_PER_PROBLEM = 4


@dataclass(frozen=True)
class Family:
    """A kind of function. `params` are alternative parameter-name tuples; `docs` docstring
    wordings with `{p0}`, `{p1}` for the parameters; `body` the reference body (4-space indented,
    same placeholders); `reference` computes the expected result that tests and examples show;
    `inputs(rng)` draws one argument tuple."""

    names: tuple[str, ...]
    params: tuple[tuple[str, ...], ...]
    docs: tuple[str, ...]
    body: str
    reference: Callable[..., Any]
    inputs: Callable[[random.Random], tuple[Any, ...]]


def _ints(rng: random.Random, low: int = -20, high: int = 50) -> list[int]:
    return [rng.randint(low, high) for _ in range(rng.randint(1, 6))]


def _two(rng: random.Random) -> tuple[int, int]:
    return rng.randint(-20, 50), rng.randint(-20, 50)


def _word(rng: random.Random) -> str:
    return rng.choice(WORDS)


_PAIR = (("a", "b"), ("x", "y"), ("first", "second"), ("m", "n"))
_LIST = (("numbers",), ("values",), ("nums",), ("items",))
_TEXT = (("text",), ("word",), ("s",), ("string",))

FAMILIES: dict[str, Family] = {
    "add": Family(
        ("add", "add_numbers", "sum_two", "plus", "add_two", "total_of"), _PAIR,
        ("Return the sum of {p0} and {p1}.", "Add {p0} and {p1} and return the result.", "Return {p0} plus {p1}."),
        "    return {p0} + {p1}\n", lambda a, b: a + b, _two),
    "multiply": Family(
        ("multiply", "product", "times", "mul", "multiply_numbers", "product_of"), _PAIR,
        ("Return the product of {p0} and {p1}.", "Multiply {p0} by {p1} and return the result.", "Return {p0} times {p1}."),
        "    return {p0} * {p1}\n", lambda a, b: a * b, _two),
    "subtract": Family(
        ("subtract", "difference", "minus", "sub", "take_away"), _PAIR,
        ("Return {p0} minus {p1}.", "Subtract {p1} from {p0} and return the result.", "Return the difference {p0} - {p1}."),
        "    return {p0} - {p1}\n", lambda a, b: a - b, _two),
    "absolute_difference": Family(
        ("absolute_difference", "distance", "abs_diff", "gap"), _PAIR,
        ("Return the absolute difference between {p0} and {p1}.", "Return how far apart {p0} and {p1} are."),
        "    return abs({p0} - {p1})\n", lambda a, b: abs(a - b), _two),
    "maximum": Family(
        ("maximum", "largest", "max_value", "biggest", "find_max", "greatest"), _LIST,
        ("Return the largest number in {p0}.", "Return the maximum of the non-empty list {p0}.", "Find the biggest value in {p0}."),
        "    return max({p0})\n", max, lambda rng: (_ints(rng),)),
    "minimum": Family(
        ("minimum", "smallest", "min_value", "find_min", "least"), _LIST,
        ("Return the smallest number in {p0}.", "Return the minimum of the non-empty list {p0}.", "Find the smallest value in {p0}."),
        "    return min({p0})\n", min, lambda rng: (_ints(rng),)),
    "sum_list": Family(
        ("sum_list", "total", "add_all", "list_sum", "sum_of"), _LIST,
        ("Return the sum of the numbers in {p0}.", "Add up all values in {p0}.", "Return the total of {p0}."),
        "    return sum({p0})\n", sum, lambda rng: (_ints(rng),)),
    "count_even": Family(
        ("count_even", "count_evens", "even_count", "number_of_evens"), _LIST,
        ("Return how many numbers in {p0} are even.", "Count the even values in {p0}."),
        "    count = 0\n    for value in {p0}:\n        if value % 2 == 0:\n            count += 1\n    return count\n",
        lambda xs: sum(1 for x in xs if x % 2 == 0), lambda rng: (_ints(rng),)),
    "double_all": Family(
        ("double_all", "doubled", "double_each", "twice_each"), _LIST,
        ("Return a list with every number of {p0} doubled.", "Multiply each value in {p0} by 2 and return the new list."),
        "    return [value * 2 for value in {p0}]\n", lambda xs: [x * 2 for x in xs], lambda rng: (_ints(rng),)),
    "positives": Family(
        ("positives", "keep_positive", "only_positive", "filter_positive"), _LIST,
        ("Return the numbers of {p0} that are greater than zero, in order.", "Keep only the positive values of {p0}."),
        "    return [value for value in {p0} if value > 0]\n", lambda xs: [x for x in xs if x > 0],
        lambda rng: (_ints(rng),)),
    "reverse": Family(
        ("reverse", "reverse_string", "backwards", "reversed_text", "flip"), _TEXT,
        ("Return {p0} reversed.", "Return the characters of {p0} in reverse order.", "Write {p0} backwards."),
        "    return {p0}[::-1]\n", lambda s: s[::-1], lambda rng: (_word(rng),)),
    "length": Family(
        ("length", "count_chars", "string_length", "size_of", "char_count"), _TEXT,
        ("Return the number of characters in {p0}.", "Return how long {p0} is."),
        "    return len({p0})\n", len, lambda rng: (_word(rng),)),
    "shout": Family(
        ("shout", "to_upper", "uppercase", "capitalize_all", "loud"), _TEXT,
        ("Return {p0} in capital letters.", "Convert {p0} to upper case."),
        "    return {p0}.upper()\n", str.upper, lambda rng: (_word(rng),)),
    "count_vowels": Family(
        ("count_vowels", "vowel_count", "vowels_in", "number_of_vowels"), _TEXT,
        ("Return how many vowels (a, e, i, o, u) are in {p0}.", "Count the vowels in the lower-case string {p0}."),
        "    count = 0\n    for char in {p0}:\n        if char in \"aeiou\":\n            count += 1\n    return count\n",
        lambda s: sum(1 for c in s if c in "aeiou"), lambda rng: (_word(rng),)),
    "count_char": Family(
        ("count_char", "occurrences", "count_letter", "how_many"), (("text", "char"), ("word", "letter"), ("s", "c")),
        ("Return how many times {p1} occurs in {p0}.", "Count the occurrences of the character {p1} in {p0}."),
        "    return {p0}.count({p1})\n", lambda s, c: s.count(c),
        lambda rng: (lambda w: (w, rng.choice(w) if rng.random() < 0.8 else rng.choice("xyzq")))(_word(rng))),
    "is_even": Family(
        ("is_even", "even", "check_even", "is_divisible_by_two"), (("n",), ("number",), ("x",), ("value",)),
        ("Return True if {p0} is even, else False.", "Check whether {p0} is an even number."),
        "    return {p0} % 2 == 0\n", lambda n: n % 2 == 0, lambda rng: (rng.randint(-50, 100),)),
    "square": Family(
        ("square", "squared", "square_of", "power_two"), (("n",), ("number",), ("x",), ("value",)),
        ("Return {p0} squared.", "Return {p0} multiplied by itself."),
        "    return {p0} * {p0}\n", lambda n: n * n, lambda rng: (rng.randint(-30, 30),)),
    "first_item": Family(
        ("first_item", "head", "first", "get_first"), _LIST,
        ("Return the first element of the non-empty list {p0}.", "Return {p0}[0], the first item."),
        "    return {p0}[0]\n", lambda xs: xs[0], lambda rng: (_ints(rng),)),
    "last_item": Family(
        ("last_item", "tail_value", "last", "get_last"), _LIST,
        ("Return the last element of the non-empty list {p0}.", "Return the final item of {p0}."),
        "    return {p0}[-1]\n", lambda xs: xs[-1], lambda rng: (_ints(rng),)),
}


@dataclass(frozen=True)
class CodeProblem:
    """One function to write: `prompt` is the signature and docstring (ends with a newline), `body`
    the reference completion, `test` HumanEval's `check(candidate)`; `key` decides the split."""

    family: str
    key: str
    entry_point: str
    prompt: str
    body: str
    test: str


def generate_problem(rng: random.Random, heldout: bool) -> CodeProblem:
    """One problem from the held-out or the training split: family, name, parameters and wording
    drawn at random until their key falls in that split."""

    def make() -> tuple[str, tuple[str, str, str, tuple[str, ...], int]]:
        family = rng.choice(tuple(FAMILIES))
        name, params = rng.choice(FAMILIES[family].names), rng.choice(FAMILIES[family].params)
        doc = rng.randrange(len(FAMILIES[family].docs))
        key = f"code:{family}:{name}:{','.join(params)}:{doc}"
        return key, (key, family, name, params, doc)

    key, family_name, name, params, doc = draw(rng, heldout, make)
    family = FAMILIES[family_name]
    slots = {f"p{i}": p for i, p in enumerate(params)}
    cases = _cases(rng, family)
    example_args, example_result = cases[0]
    prompt = (f"def {name}({', '.join(params)}):\n"
              f"    \"\"\"{family.docs[doc].format(**slots)}\n"
              f"    >>> {name}({_args(example_args)})\n"
              f"    {example_result!r}\n"
              f"    \"\"\"\n")
    asserts = "".join(f"    assert candidate({_args(args)}) == {result!r}\n" for args, result in cases)
    return CodeProblem(family_name, key, name, prompt, family.body.format(**slots), f"def check(candidate):\n{asserts}")


def _cases(rng: random.Random, family: Family) -> list[tuple[tuple[Any, ...], Any]]:
    """`TESTS_PER_PROBLEM` distinct argument tuples (fewer where the family has few) and their results."""
    cases: dict[str, tuple[tuple[Any, ...], Any]] = {}
    for _ in range(TESTS_PER_PROBLEM * 10):
        args = family.inputs(rng)
        cases.setdefault(repr(args), (args, family.reference(*args)))
        if len(cases) == TESTS_PER_PROBLEM:
            break
    return list(cases.values())


def _args(args: tuple[Any, ...]) -> str:
    return ", ".join(map(repr, args))


def humaneval_record(problem: CodeProblem, index: int) -> dict[str, str]:
    """HumanEval's record: task_id, prompt, canonical_solution, test, entry_point."""
    return {"task_id": f"llama2-code/{index}", "prompt": problem.prompt, "canonical_solution": problem.body,
            "test": problem.test, "entry_point": problem.entry_point}


def train_pair(problem: CodeProblem, prompt: Callable[[str], str] | None = None) -> tuple[str, str]:
    """(prompt, completion) to train on: the signature and docstring (through `prompt`, default as
    they are, which is what the humaneval task sends a local model) and the body that completes them."""
    return (prompt or str)(problem.prompt), problem.body
