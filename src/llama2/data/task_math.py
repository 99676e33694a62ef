"""GSM8K-style word problems for task fine-tuning, generated with computed answers.

    llama2 data build-task math --output DIR          # DIR/train.jsonl + DIR/gsm8k/test.jsonl

Each problem is one or two steps of arithmetic in a short story (gaining, giving away, equal groups,
prices, comparing, combining), worked the way the bundled chat model learned arithmetic
(`chat_tasks`: column addition and subtraction, multiplication by tens and ones) and ending as GSM8K
answers do. Two shapes come out of one `MathProblem`:

- the held-out set, in GSM8K's own layout, which `llama2 eval run --tasks gsm8k --num-fewshot 2` reads:
  `{"question": ..., "answer": "<worked steps>\\n#### N"}`;
- the training pair (`train_pair`): the question as the gsm8k task prompts a model ("Q: <question>\\nA:",
  after `NUM_FEWSHOT` of its exemplars for a share of the problems when `llama2 data build-task` writes them) and
  the worked answer ending "The answer is N.", which the task's strict match reads.

The split reuses `chat_tasks.draw`: a problem's key (its kind and numbers, in the same form as the
chat data's word problems) decides whether it is held out, so no held-out problem, and no problem
with held-out numbers, is ever in the training set, nor in `default-chat`'s own training data.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from llama2.data.chat_tasks import NAMES, add_steps, draw, mul_steps, sub_steps
from llama2.errors import DataError

__all__ = ["FEW_SHOT_SHARE", "NUM_FEWSHOT", "MathProblem", "PROBLEMS", "generate_problem", "gsm8k_record", "train_pair", "question_prompt"]

# The most gsm8k exemplars that fit default-chat's 512 positions together with a question and its
# worked answer: at most 407 tokens with 2 (526 with 3, 1,107 with the paper's 8). Task fine-tuning
# on math is measured with `llama2 eval run --tasks gsm8k --num-fewshot 2`.
NUM_FEWSHOT = 2
# Share of training problems given the benchmark's few-shot prompt: enough to learn where the answer
# goes after the exemplars, while the short prompts of the rest give more problems for the same
# compute (chosen with the 8-shot prompt, 0.12 vs 0.08 exact match in one comparison; kept for 2).
FEW_SHOT_SHARE = 0.2

_ITEMS = ("apples", "books", "coins", "marbles", "pencils", "stickers", "cookies", "eggs", "shells", "stamps",
          "cards", "buttons", "flowers", "balloons", "cups", "rocks", "beads", "candles", "oranges", "toys")
_CONTAINERS = ("boxes", "bags", "jars", "baskets", "packs", "trays")
_GOODS = ("notebooks", "sandwiches", "tickets", "plants", "kites", "puzzles", "mugs", "pens")


@dataclass(frozen=True)
class MathProblem:
    """A word problem: `kind` and `key` (kind and numbers) decide the split; `steps` is the worked
    reasoning without the final answer line; `answer` the computed result."""

    kind: str
    key: str
    question: str
    steps: str
    answer: int


def question_prompt(question: str) -> str:
    """A question as GSM8K's chain-of-thought prompt ends: the model continues after "A:"."""
    return f"Q: {question}\nA:"


def gsm8k_record(problem: MathProblem) -> dict[str, str]:
    """GSM8K's test.jsonl record: the question and the worked answer ending "#### N"."""
    return {"question": problem.question, "answer": f"{problem.steps}\n#### {problem.answer}"}


def train_pair(problem: MathProblem, prompt: Callable[[str], str] | None = None) -> tuple[str, str]:
    """(prompt, completion) to train on: the question as `prompt` puts it (default
    `question_prompt`; it must end with "A:", as the gsm8k task's prompt does) and the worked answer
    ending "The answer is N." (the gsm8k task's strict match)."""
    text = (prompt or question_prompt)(problem.question)
    if not text.endswith("A:"):
        raise DataError(f"a math prompt must end with 'A:' (the model answers after it), got ...{text[-20:]!r}")
    return text, f" {problem.steps} The answer is {problem.answer}."


# ---- the kinds of problems --------------------------------------------------------------------


def _pair(rng: random.Random, heldout: bool, op: str) -> tuple[int, int]:
    """Two numbers keyed as `op:a,b` (the chat data's key form): 2..9 times 2..12 for `mul`, else
    two numbers of 2..99, with a > b for `sub`."""

    def make() -> tuple[str, tuple[int, int]]:
        if op == "mul":
            a, b = rng.randint(2, 9), rng.randint(2, 12)
        else:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            if op == "sub":
                a, b = max(a, b) + (a == b), min(a, b)
        return f"{op}:{a},{b}", (a, b)

    return draw(rng, heldout, make)


_Triple = tuple[int, int, int]


def _triple(rng: random.Random, heldout: bool, kind: str, make_numbers: Callable[[], _Triple]) -> _Triple:
    """Three numbers keyed as `kind:a,b,c`."""

    def make() -> tuple[str, _Triple]:
        numbers = make_numbers()
        return f"{kind}:" + ",".join(map(str, numbers)), numbers

    return draw(rng, heldout, make)


def _two_names(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(NAMES, 2)
    return first, second


def gain(rng: random.Random, heldout: bool) -> MathProblem:
    a, b = _pair(rng, heldout, "add")
    name, item = rng.choice(NAMES), rng.choice(_ITEMS)
    verb = rng.choice(("buys", "finds", "is given", "gets"))
    question = f"{name} has {a} {item}. Then {name} {verb} {b} more. How many {item} does {name} have now?"
    steps = f"{name} starts with {a} {item} and gets {b} more, so we add. {add_steps(a, b)}"
    return MathProblem("gain", f"add:{a},{b}", question, steps, a + b)


def give_away(rng: random.Random, heldout: bool) -> MathProblem:
    a, b = _pair(rng, heldout, "sub")
    (name, friend), item = _two_names(rng), rng.choice(_ITEMS)
    question = f"{name} had {a} {item} and gave {b} of them to {friend}. How many {item} does {name} have left?"
    steps = f"{name} had {a} {item} and gave away {b}, so we subtract. {sub_steps(a, b)}"
    return MathProblem("give_away", f"sub:{a},{b}", question, steps, a - b)


def together(rng: random.Random, heldout: bool) -> MathProblem:
    a, b = _pair(rng, heldout, "add")
    (name, friend), item = _two_names(rng), rng.choice(_ITEMS)
    question = f"{name} has {a} {item} and {friend} has {b} {item}. How many {item} do they have together?"
    steps = f"{name} has {a} and {friend} has {b}, so together they have {a} + {b}. {add_steps(a, b)}"
    return MathProblem("together", f"add:{a},{b}", question, steps, a + b)


def how_many_more(rng: random.Random, heldout: bool) -> MathProblem:
    a, b = _pair(rng, heldout, "sub")
    (name, friend), item = _two_names(rng), rng.choice(_ITEMS)
    question = f"{name} has {a} {item}. {friend} has {b} {item}. How many more {item} does {name} have than {friend}?"
    steps = f"The difference is {a} - {b}. {sub_steps(a, b)}"
    return MathProblem("how_many_more", f"sub:{a},{b}", question, steps, a - b)


def groups(rng: random.Random, heldout: bool) -> MathProblem:
    a, b = _pair(rng, heldout, "mul")
    name, item, container = rng.choice(NAMES), rng.choice(_ITEMS), rng.choice(_CONTAINERS)
    question = f"{name} has {a} {container} with {b} {item} in each. How many {item} does {name} have in all?"
    steps = f"{a} {container} of {b} {item} is {a} × {b}. {mul_steps(a, b)}"
    return MathProblem("groups", f"mul:{a},{b}", question, steps, a * b)


def price(rng: random.Random, heldout: bool) -> MathProblem:
    a, b = _pair(rng, heldout, "mul")
    name, goods = rng.choice(NAMES), rng.choice(_GOODS)
    question = f"{name} buys {a} {goods} that cost ${b} each. How many dollars does {name} spend?"
    steps = f"{a} {goods} at ${b} each cost {a} × {b} dollars. {mul_steps(a, b)}"
    return MathProblem("price", f"mul:{a},{b}", question, steps, a * b)


def gain_then_give(rng: random.Random, heldout: bool) -> MathProblem:
    """Two steps: add, then subtract from the sum."""

    def numbers() -> tuple[int, int, int]:
        a, b = rng.randint(2, 60), rng.randint(2, 39)
        return a, b, rng.randint(1, a + b - 1)

    a, b, c = _triple(rng, heldout, "add-sub", numbers)
    (name, friend), item = _two_names(rng), rng.choice(_ITEMS)
    question = (f"{name} had {a} {item}. {name} bought {b} more and then gave {c} to {friend}. "
                f"How many {item} does {name} have now?")
    steps = (f"First {name} has {a} + {b} {item}. {add_steps(a, b)} "
             f"Then {name} gives away {c}, so {a + b} - {c}. {sub_steps(a + b, c)}")
    return MathProblem("gain_then_give", f"add-sub:{a},{b},{c}", question, steps, a + b - c)


def groups_and_extra(rng: random.Random, heldout: bool) -> MathProblem:
    """Two steps: multiply, then add the loose ones."""
    a, b, c = _triple(rng, heldout, "mul-add", lambda: (rng.randint(2, 9), rng.randint(2, 12), rng.randint(2, 30)))
    name, item, container = rng.choice(NAMES), rng.choice(_ITEMS), rng.choice(_CONTAINERS)
    question = (f"{name} has {a} {container} with {b} {item} in each and {c} more {item} on the table. "
                f"How many {item} does {name} have?")
    steps = (f"The {container} hold {a} × {b} {item}. {mul_steps(a, b)} "
             f"With the {c} on the table that is {a * b} + {c}. {add_steps(a * b, c)}")
    return MathProblem("groups_and_extra", f"mul-add:{a},{b},{c}", question, steps, a * b + c)


PROBLEMS: dict[str, Callable[[random.Random, bool], MathProblem]] = {
    "gain": gain, "give_away": give_away, "together": together, "how_many_more": how_many_more,
    "groups": groups, "price": price, "gain_then_give": gain_then_give, "groups_and_extra": groups_and_extra,
}


def generate_problem(rng: random.Random, heldout: bool) -> MathProblem:
    """One problem of a kind drawn uniformly, from the held-out or the training split."""
    return PROBLEMS[rng.choice(tuple(PROBLEMS))](rng, heldout)
