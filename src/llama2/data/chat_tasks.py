"""Checkable tasks of the bundled chat model's SFT data: arithmetic with worked steps and simple
text instructions, each generated from slots with its answer computed (never looked up).

Every generator is `generate(rng, heldout) -> Sample`. The value a sample is built from (the pair of
numbers, the word, the list) has a `key`; `is_heldout_key` puts a fixed tenth of all keys in the
held-out split, so a held-out prompt asks about values the training split never shows for that kind
of task. Worked steps go digit by digit (column addition and subtraction, multiplication split into
tens and ones): the tokenizer splits numbers into single digits, and a 7M-parameter model can learn
one-digit facts far more easily than whole sums (Llama 2 §3.1 trains on answers; ours show the work).
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "HELDOUT_MODULUS",
    "Sample",
    "is_heldout_key",
    "add_steps",
    "sub_steps",
    "mul_steps",
    "spelled",
    "WORDS",
    "NAMES",
    "ARITHMETIC",
    "TEXT_TASKS",
    "CHECKS",
]

# One key in HELDOUT_MODULUS is held out (by CRC-32, so the split is the same on every machine).
HELDOUT_MODULUS = 10
T = TypeVar("T")
PLACES = ("Ones", "Tens", "Hundreds", "Thousands")


@dataclass(frozen=True)
class Sample:
    """One generated dialog: `turns` are (user, assistant) pairs; `answer` is what a check compares
    a reply against and `reject` what a correct reply must not contain (None / empty where there is
    nothing to check); `key` decides the split; `category` is a safety record's risk category."""

    turns: tuple[tuple[str, str], ...]
    key: str
    answer: str | None = None
    check: str | None = None
    reject: tuple[str, ...] = ()
    category: str | None = None


def is_heldout_key(key: str) -> bool:
    return zlib.crc32(key.encode("utf-8")) % HELDOUT_MODULUS == 0


def draw(rng: random.Random, heldout: bool, make: Callable[[], tuple[str, T]]) -> T:
    """Call `make() -> (key, value)` until the key falls in the wanted split; return the value."""
    while True:
        key, value = make()
        if is_heldout_key(key) == heldout:
            return value


# ---- worked arithmetic -----------------------------------------------------------------------


def _digits(n: int) -> list[int]:
    """Digits from the ones place up."""
    return [int(c) for c in reversed(str(n))]


def add_steps(a: int, b: int) -> str:
    """Column addition, ones first, with carries: "Ones: 3 + 8 = 11, write 1 and carry 1. ..."."""
    if a < 10 and b < 10:
        return f"{a} + {b} = {a + b}."
    da, db = _digits(a), _digits(b)
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        total = x + y + carry
        expr = f"{x} + {y}" + (" + 1" if carry else "")
        tail = f", write {total % 10} and carry 1." if total >= 10 else "."
        steps.append(f"{PLACES[i]}: {expr} = {total}{tail}")
        carry = total // 10
    if carry:
        steps.append(f"{PLACES[len(steps)]}: the carried 1.")
    return " ".join(steps) + f" So {a} + {b} = {a + b}."


def sub_steps(a: int, b: int) -> str:
    """Column subtraction (`a >= b`), ones first; a borrow is added to the next lower digit."""
    if a < b:
        raise ValueError(f"sub_steps needs a >= b, got {a} - {b}")
    if a < 10:
        return f"{a} - {b} = {a - b}."
    da, db = _digits(a), _digits(b)
    steps, borrow = [], 0
    for i, x in enumerate(da):
        y = db[i] if i < len(db) else 0
        lower = y + borrow
        prefix = f"{y} + 1 = {lower}, " if borrow else ""
        if x < lower:
            steps.append(f"{PLACES[i]}: {prefix}{x} - {lower} needs a borrow, so {x + 10} - {lower} = {x + 10 - lower}.")
            borrow = 1
        else:
            steps.append(f"{PLACES[i]}: {prefix}{x} - {lower} = {x - lower}.")
            borrow = 0
    return " ".join(steps) + f" So {a} - {b} = {a - b}."


def mul_steps(a: int, b: int) -> str:
    """A one-digit `a` times `b` < 100: tens and ones apart, then added."""
    if b < 10:
        return f"{a} × {b} = {a * b}."
    tens, ones = divmod(b, 10)
    parts = [f"{a} × {tens} = {a * tens}, so {a} × {tens * 10} = {a * tens * 10}."]
    if ones:
        parts.append(f"{a} × {ones} = {a * ones}.")
        parts.append(f"{a * tens * 10} + {a * ones} = {a * b}.")
    return " ".join(parts) + f" So {a} × {b} = {a * b}."


def _number(rng: random.Random, max_digits: int = 3) -> int:
    digits = rng.randint(1, max_digits)
    return rng.randint(10 ** (digits - 1) if digits > 1 else 1, 10**digits - 1)


def _pair(rng: random.Random, heldout: bool, op: str) -> tuple[int, int]:
    def make() -> tuple[str, tuple[int, int]]:
        if op == "mul":
            a, b = rng.randint(2, 9), rng.randint(2, 99)
        else:
            a, b = _number(rng), _number(rng)
            if op == "sub" and a < b:
                a, b = b, a
        return f"{op}:{a},{b}", (a, b)

    return draw(rng, heldout, make)


_ADD_ASK = ("What is {a} + {b}?", "Calculate {a} + {b}.", "Add {a} and {b}.", "What is {a} plus {b}?", "{a} + {b} = ?")
_SUB_ASK = ("What is {a} - {b}?", "Calculate {a} - {b}.", "Subtract {b} from {a}.", "What is {a} minus {b}?", "{a} - {b} = ?")
_MUL_ASK = ("What is {a} × {b}?", "What is {a} times {b}?", "Calculate {a} * {b}.", "Multiply {a} by {b}.", "{a} x {b} = ?")


def addition(rng: random.Random, heldout: bool) -> Sample:
    a, b = _pair(rng, heldout, "add")
    return _arith(rng, _ADD_ASK, a, b, add_steps(a, b), a + b, "add")


def subtraction(rng: random.Random, heldout: bool) -> Sample:
    a, b = _pair(rng, heldout, "sub")
    return _arith(rng, _SUB_ASK, a, b, sub_steps(a, b), a - b, "sub")


def multiplication(rng: random.Random, heldout: bool) -> Sample:
    a, b = _pair(rng, heldout, "mul")
    return _arith(rng, _MUL_ASK, a, b, mul_steps(a, b), a * b, "mul")


def _arith(rng, asks, a: int, b: int, steps: str, result: int, op: str) -> Sample:
    prompt = rng.choice(asks).format(a=a, b=b)
    return Sample(((prompt, f"{steps} The answer is {result}."),), f"{op}:{a},{b}", str(result), "last_number")


NAMES = (
    "Sam", "Ana", "Ben", "Mia", "Leo", "Zoe", "Omar", "Ivy", "Raj", "Lena", "Tom", "Ada", "Max", "Nia", "Eli",
    "Rosa", "Kai", "Emma", "Noah", "Lily", "Finn", "Maya", "Jack", "Sara", "Hugo", "Yuki", "Amir", "Cleo",
)
_THINGS = ("apples", "books", "coins", "marbles", "pencils", "stickers", "cookies", "eggs", "shells", "stamps",
           "cards", "buttons", "flowers", "balloons", "cups", "rocks", "beads", "candles")


def word_problem(rng: random.Random, heldout: bool) -> Sample:
    """A one-step story problem (add, take away, equal groups) with the computed answer last."""
    op = rng.choice(("add", "sub", "mul"))
    name, thing = rng.choice(NAMES), rng.choice(_THINGS)

    def make() -> tuple[str, tuple[int, int]]:
        if op == "mul":
            a, b = rng.randint(2, 9), rng.randint(2, 12)
        else:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            if op == "sub" and a < b:
                a, b = b, a
        return f"{op}:{a},{b}", (a, b)

    a, b = draw(rng, heldout, make)
    if op == "add":
        prompt = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
        reply = f"{name} starts with {a} {thing} and gets {b} more, so we add. {add_steps(a, b)} {name} has {a + b} {thing}."
        result = a + b
    elif op == "sub":
        prompt = f"{name} had {a} {thing} and gave {b} of them away. How many {thing} does {name} have left?"
        reply = f"{name} had {a} {thing} and gave away {b}, so we subtract. {sub_steps(a, b)} {name} has {a - b} {thing} left."
        result = a - b
    else:
        prompt = f"{name} has {a} bags with {b} {thing} in each bag. How many {thing} is that in all?"
        reply = f"{a} bags of {b} {thing} is {a} × {b}. {mul_steps(a, b)} That is {a * b} {thing} in all."
        result = a * b
    return Sample(((prompt, reply),), f"{op}:{a},{b}", str(result), "last_number")


# ---- text instructions ------------------------------------------------------------------------

# Common English words, written for this project; lower-case letters only.
WORDS = tuple("""
apple bread chair dog house river garden window table green yellow orange purple water stone light
paper music happy quick brown horse bird fish cloud rain snow sun moon star tree leaf flower grass
sand sea lake hill road city town school book pencil clock phone lamp door floor wall roof bed cup
plate spoon fork knife bottle box bag hat coat shoe sock shirt dress ring coin gold silver iron
salt sugar honey milk cheese butter egg rice corn bean carrot potato tomato lemon grape cherry peach
plum melon banana mango cookie cake pie soup tea juice candy pizza pasta salad sandwich kitten puppy
rabbit mouse tiger lion bear wolf fox deer goat sheep cow duck goose owl eagle frog snake turtle
whale shark crab bee ant spider robot rocket planet garden forest desert island valley bridge tower
castle farm market library museum doctor teacher farmer baker pilot sailor artist singer dancer
friend family mother father sister brother baby child king queen prince dragon giant wizard ghost
winter summer spring autumn morning evening night today tomorrow yesterday monday friday sunday
happy sad angry calm brave kind gentle funny clever quiet loud soft hard warm cold fresh sweet
bitter simple little large small tall short long wide narrow bright dark clean heavy empty
jump run walk swim read write sing dance laugh smile sleep dream cook bake paint build climb throw
catch carry open close start finish learn teach help share listen speak travel visit wonder
""".split())
WORDS = tuple(dict.fromkeys(WORDS))  # order kept, any repeat dropped


def spelled(word: str) -> str:
    return "-".join(word)


def _word(rng: random.Random, heldout: bool) -> str:
    def make() -> tuple[str, str]:
        word = rng.choice(WORDS)
        return f"word:{word}", word

    return draw(rng, heldout, make)


def reverse_word(rng: random.Random, heldout: bool) -> Sample:
    word = _word(rng, heldout)
    prompt = rng.choice(('Reverse the word "{w}".', 'Write "{w}" backwards.', 'What is "{w}" spelled backwards?')).format(w=word)
    back = word[::-1]
    reply = f'The letters of "{word}" are {spelled(word)}. Backwards they are {spelled(back)}, so the reversed word is "{back}".'
    return Sample(((prompt, reply),), f"word:{word}", back, "contains_word")


def count_letters(rng: random.Random, heldout: bool) -> Sample:
    word = _word(rng, heldout)
    prompt = rng.choice(('How many letters are in the word "{w}"?', 'Count the letters in "{w}".')).format(w=word)
    reply = f'The word "{word}" is spelled {spelled(word)}, so it has {len(word)} letters.'
    return Sample(((prompt, reply),), f"word:{word}", str(len(word)), "last_number")


def count_letter(rng: random.Random, heldout: bool) -> Sample:
    word = _word(rng, heldout)
    letter = rng.choice(word) if rng.random() < 0.75 else rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c not in word])
    n = word.count(letter)
    prompt = f'How many times does the letter "{letter}" appear in "{word}"?'
    times = "time" if n == 1 else "times"
    reply = f'Spelled out, "{word}" is {spelled(word)}. The letter "{letter}" appears {n} {times}.'
    return Sample(((prompt, reply),), f"word:{word}", str(n), "last_number_or_word")


def spell_word(rng: random.Random, heldout: bool) -> Sample:
    word = _word(rng, heldout)
    prompt = rng.choice(('Spell the word "{w}".', 'How do you spell "{w}"? Letter by letter, please.')).format(w=word)
    return Sample(((prompt, f'"{word}" is spelled {spelled(word)}.'),), f"word:{word}", spelled(word), "contains")


def uppercase(rng: random.Random, heldout: bool) -> Sample:
    def make() -> tuple[str, str]:
        phrase = " ".join(rng.sample(WORDS, rng.randint(1, 2)))
        return f"upper:{phrase}", phrase

    phrase = draw(rng, heldout, make)
    prompt = rng.choice(('Write "{p}" in capital letters.', 'Convert "{p}" to uppercase.', 'Make "{p}" all caps.')).format(p=phrase)
    return Sample(((prompt, f"In capital letters: {phrase.upper()}"),), f"upper:{phrase}", phrase.upper(), "contains")


def sort_numbers(rng: random.Random, heldout: bool) -> Sample:
    def make() -> tuple[str, list[int]]:
        numbers = rng.sample(range(1, 100), rng.randint(3, 6))
        return "sort:" + ",".join(map(str, sorted(numbers))), numbers

    numbers = draw(rng, heldout, make)
    listed = ", ".join(map(str, numbers))
    if rng.random() < 0.7:
        prompt = rng.choice(("Sort these numbers from smallest to largest: {l}.", "Put these numbers in increasing order: {l}.")).format(l=listed)
        answer, how = ", ".join(map(str, sorted(numbers))), "From smallest to largest"
    else:
        prompt = f"Sort these numbers from largest to smallest: {listed}."
        answer, how = ", ".join(map(str, sorted(numbers, reverse=True))), "From largest to smallest"
    return Sample(((prompt, f"{how}: {answer}."),), "sort:" + ",".join(map(str, sorted(numbers))), answer, "contains")


def list_item(rng: random.Random, heldout: bool) -> Sample:
    def make() -> tuple[str, list[str]]:
        items = rng.sample(WORDS, rng.randint(3, 5))
        return "items:" + ",".join(items), items

    items = draw(rng, heldout, make)
    which = rng.choice(("first", "last"))
    item = items[0] if which == "first" else items[-1]
    prompt = rng.choice(("What is the {w} item in this list: {l}?", "Name the {w} word in this list: {l}.")).format(w=which, l=", ".join(items))
    others = tuple(i for i in items if i != item)
    return Sample(((prompt, f"The {which} item is {item}."),), "items:" + ",".join(items), item, "only_word", others)


def compare_numbers(rng: random.Random, heldout: bool) -> Sample:
    def make() -> tuple[str, tuple[int, int]]:
        a, b = rng.sample(range(1, 1000), 2)
        return f"cmp:{a},{b}", (a, b)

    a, b = draw(rng, heldout, make)
    form = rng.choice(("greater", "less", "which"))
    if form == "which":
        big, small = max(a, b), min(a, b)
        prompt = rng.choice(("Which number is larger, {a} or {b}?", "Which is bigger: {a} or {b}?")).format(a=a, b=b)
        return Sample(((prompt, f"{big} is larger than {small}."),), f"cmp:{a},{b}", str(big), "first_number")
    yes = a > b if form == "greater" else a < b
    relation = "greater than" if a > b else "less than"
    reply = f"{'Yes' if yes else 'No'}, {a} is {relation} {b}."
    return Sample(((f"Is {a} {form} than {b}?", reply),), f"cmp:{a},{b}", "Yes" if yes else "No", "yes_no")


ARITHMETIC = {"addition": addition, "subtraction": subtraction, "multiplication": multiplication, "word_problem": word_problem}
TEXT_TASKS = {
    "reverse_word": reverse_word, "count_letters": count_letters, "count_letter": count_letter,
    "spell_word": spell_word, "uppercase": uppercase, "sort_numbers": sort_numbers, "list_item": list_item,
    "compare_numbers": compare_numbers,
}


# ---- checks: exact, and simple enough to read -------------------------------------------------

_INT = re.compile(r"-?\d+")
_NUMBER_WORDS = {"zero": 0, "once": 1, "one": 1, "twice": 2, "two": 2, "three": 3, "four": 4, "five": 5}


def _last_number(reply: str, answer: str, reject: tuple[str, ...]) -> bool:
    numbers = _INT.findall(reply)
    return bool(numbers) and int(numbers[-1]) == int(answer)


def _last_number_or_word(reply: str, answer: str, reject: tuple[str, ...]) -> bool:
    """The last number, where small counts may also be written as words ("once", "twice", "three")."""
    tokens = re.findall(r"-?\d+|[A-Za-z]+", reply.lower())
    values = [int(t) if t[-1].isdigit() else _NUMBER_WORDS[t] for t in tokens if t[-1].isdigit() or t in _NUMBER_WORDS]
    return bool(values) and values[-1] == int(answer)


def _first_number(reply: str, answer: str, reject: tuple[str, ...]) -> bool:
    numbers = _INT.findall(reply)
    return bool(numbers) and int(numbers[0]) == int(answer)


def _contains(reply: str, answer: str, reject: tuple[str, ...]) -> bool:
    return answer in reply


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", text) is not None


def _contains_word(reply: str, answer: str, reject: tuple[str, ...]) -> bool:
    return _has_word(reply, answer)


def _only_word(reply: str, answer: str, reject: tuple[str, ...]) -> bool:
    return _has_word(reply, answer) and not any(_has_word(reply, other) for other in reject)


def _yes_no(reply: str, answer: str, reject: tuple[str, ...]) -> bool:
    first = re.match(r"\W*([A-Za-z]+)", reply)
    return first is not None and first.group(1).lower() == answer.lower()


# check name -> (reply, answer, reject) -> correct?
CHECKS: dict[str, Callable[[str, str, tuple[str, ...]], bool]] = {
    "last_number": _last_number,
    "last_number_or_word": _last_number_or_word,
    "first_number": _first_number,
    "contains": _contains,
    "contains_word": _contains_word,
    "only_word": _only_word,
    "yes_no": _yes_no,
}
