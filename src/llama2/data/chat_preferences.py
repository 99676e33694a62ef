"""Miniature preference pairs for the bundled chat model, generated from the project's own chat data
(LLAMA2.md §4.1 in miniature), never downloaded:

    llama2 data build-preferences --output DIR [--seed S]

writes the pair JSONL form `data.preference` reads, one file per reward model and split:

    DIR/helpfulness.jsonl           DIR/heldout/helpfulness.jsonl
    DIR/safety.jsonl                DIR/heldout/safety.jsonl

Helpfulness pairs answer the checkable tasks of `chat_tasks` (worked arithmetic, text
instructions); the rejected reply is worse by a graded amount, so the four ratings mean something:

- significantly better: a non-answer ("I'm not sure...") against the worked answer;
- better: a fluent answer to another question of the same task (wrong values throughout);
- significantly better or better: a correct answer against a wrong one in the same words and shape,
  as the paper's annotators prefer a correct answer to a fluent wrong one: a result off by a
  few, a carry slip (off by ten) or the wrong operation, a letter count off by one or two, a
  misspelling, a word not (or badly) reversed, half-done capitals, a list sorted the wrong way
  or not at all, the other end of a list, the smaller number called larger, Yes for No (kind
  `wrong_answer`; gross errors are "significantly better", near misses "better"; the rejected
  reply always fails the task's own check);
- slightly better: the right work with a wrong final result (one value changed);
- negligibly better / unsure: two correct answers, worked and terse, in random order — a coin
  flip, as the paper's "unsure" pairs nearly are (reward models score 52-55% on them, Table 8).

Safety pairs use the harmful and borderline requests of `chat_safety`, with the labels of the
paper's safety stage (`chosen_safe`, `rejected_safe`; §3.2.1):

- harmful request, safe refusal vs compliance (chosen safe, rejected unsafe);
- harmful request, the guideline's refusal (risk, then a safe alternative) vs a bare refusal (both
  safe, slightly better);
- harmful request, two compliances (both unsafe, negligibly better, random order);
- borderline request, the helpful answer vs a needless refusal (both safe): the false refusals of
  §4.2.3 are what the safety reward model must not reward.

The compliant replies only say that they comply ("Sure! Here is how to ...: first, get what you
need ..."); they hold no harmful content. Held-out files use the held-out values, requests and
framings of `chat_tasks`/`chat_safety`, which the training files never use. Each record also names
its `kind` and, for helpfulness, its `task` (the reader ignores both); `category` is the task or
the risk category (`borderline` for borderline requests).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama2.atomic import write_text
from llama2.data.chat_safety import HARMS, HELDOUT_HARMS, Harm, borderline_request, harmful_request
from llama2.data.chat_tasks import ARITHMETIC, CHECKS, TEXT_TASKS, Sample, spelled
from llama2.errors import ConfigError, DataError

__all__ = ["SPLITS", "DEFAULT_COUNTS", "FILES", "build_preference_pairs", "write_preference_pairs"]

SPLITS = ("train", "heldout")
DEFAULT_COUNTS = {("train", "helpfulness"): 2000, ("train", "safety"): 1200,
                  ("heldout", "helpfulness"): 400, ("heldout", "safety"): 240}
FILES = {("train", "helpfulness"): "helpfulness.jsonl", ("train", "safety"): "safety.jsonl",
         ("heldout", "helpfulness"): "heldout/helpfulness.jsonl", ("heldout", "safety"): "heldout/safety.jsonl"}
TASKS: dict[str, Callable[[random.Random, bool], Sample]] = {**ARITHMETIC, **TEXT_TASKS}
# Share of each kind of pair in a file.
HELPFULNESS_KINDS = {"non_answer": 0.15, "other_question": 0.2, "wrong_answer": 0.35, "wrong_result": 0.15,
                     "unsure": 0.15}
SAFETY_KINDS = {"refusal_vs_compliance": 0.4, "guideline_vs_bare_refusal": 0.15, "both_unsafe": 0.15,
                "answer_vs_false_refusal": 0.3}
_MAX_MISSES = 1000  # draws in a row that bring no new held-out pair before the pool counts as used up

_NON_ANSWERS = ("I'm not sure. Maybe ask someone else?", "That is a good question!", "I don't know.",
                "Let me think about it and get back to you later.", "Hmm, that depends. It could be many things.")
_COMPLY = ("Sure! Here is how to {x}.", "Of course. To {x}, follow these steps.", "No problem, here's the easiest way to {x}.")
_COMPLY_STEPS = ("First, get everything you need and pick a time when nobody is around. Then do it quickly and "
                 "quietly, and make sure you leave no trace.",
                 "Step 1: plan it carefully. Step 2: do it when no one is watching. Step 3: don't tell anyone.")
_COMPLY_HATE = "Sure! Here is how to {x}. Be as harsh as you can, and I can make it even harsher if you like."
_COMPLY_ADVICE = "Sure, go ahead and {x}. It's probably fine, and there's no need to check with a professional."
_BARE_REFUSALS = ("I can't help with that.", "I won't help with that.", "Sorry, but I can't do that.")
_FALSE_REFUSALS = ("I'm sorry, but I can't help with that. It sounds like it could be dangerous.",
                   "I can't help with requests like this, as they could cause harm.",
                   "I won't help with that, because it could be used to hurt someone.")
_HARMS = {h.request: h for h in HARMS + HELDOUT_HARMS}
_YOU = {"my": "your", "myself": "yourself", "me": "you", "I": "you", "I'm": "you're", "mine": "yours"}


@dataclass(frozen=True)
class _Pair:
    prompt: str
    chosen: str
    rejected: str
    strength: str
    category: str
    kind: str
    chosen_safe: bool | None = None
    rejected_safe: bool | None = None
    task: str | None = None

    def to_record(self) -> dict[str, Any]:
        record = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected, "strength": self.strength,
                  "category": self.category, "kind": self.kind}
        if self.chosen_safe is not None:
            record |= {"chosen_safe": self.chosen_safe, "rejected_safe": self.rejected_safe}
        if self.task is not None:
            record["task"] = self.task
        return record


def build_preference_pairs(*, seed: int = 0, split: str = "train", model: str = "helpfulness",
                           count: int | None = None) -> list[dict[str, Any]]:
    """`count` pair records for one reward model (`helpfulness` or `safety`) and split, the same for
    the same seed: each kind of pair gets its share (largest remainders) from its own seeded stream;
    then the records are shuffled. Held-out records are distinct."""
    if split not in SPLITS or model not in ("helpfulness", "safety"):
        raise ConfigError(f"unknown split {split!r} or model {model!r}; use split train|heldout and model helpfulness|safety")
    count = DEFAULT_COUNTS[(split, model)] if count is None else count
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}")
    kinds = HELPFULNESS_KINDS if model == "helpfulness" else SAFETY_KINDS
    make = _helpfulness_pair if model == "helpfulness" else _safety_pair
    records: list[dict[str, Any]] = []
    for kind, quota in zip(kinds, _allocate(count, list(kinds.values()))):
        rng = random.Random(f"llama2-preferences:{split}:{seed}:{kind}")
        records += _draw(lambda: make(kind, rng, split == "heldout"), quota, distinct=split == "heldout", kind=kind)
    random.Random(f"llama2-preferences:{split}:{seed}:{model}:order").shuffle(records)
    return records


def write_preference_pairs(output: str | Path, *, seed: int = 0, overwrite: bool = False) -> dict[str, dict[str, int]]:
    """Write the four files under `output` (atomically); returns the pairs per file and strength."""
    output = Path(output).expanduser()
    written = {}
    for (split, model), name in FILES.items():
        records = build_preference_pairs(seed=seed, split=split, model=model)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        write_text(output / name, text, overwrite=overwrite)
        written[name] = dict(Counter(r["strength"] for r in records))
    return written


def _draw(make: Callable[[], _Pair], quota: int, *, distinct: bool, kind: str) -> list[dict[str, Any]]:
    records, seen, misses = [], set(), 0
    while len(records) < quota and misses < _MAX_MISSES:
        pair = make()
        key = (pair.prompt, pair.chosen, pair.rejected)
        if distinct and key in seen:
            misses += 1
            continue
        seen.add(key)
        records.append(pair.to_record())
        misses = 0
    if len(records) < quota:
        raise DataError(f"held-out pairs of kind {kind!r}: only {len(records)} distinct ones for the {quota} asked; "
                        "ask for fewer")
    return records


def _allocate(count: int, weights: list[float]) -> list[int]:
    """`count` split in proportion to `weights`, largest remainders first (ties: earlier kind)."""
    exact = [count * w / sum(weights) for w in weights]
    quotas = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: (quotas[i] - exact[i], i))[: count - sum(quotas)]:
        quotas[i] += 1
    return quotas


# ---- helpfulness -------------------------------------------------------------------------------


def _helpfulness_pair(kind: str, rng: random.Random, heldout: bool) -> _Pair:
    task = rng.choice(sorted(TASKS))
    sample = TASKS[task](rng, heldout)
    prompt, answer = sample.turns[0]
    if kind == "wrong_answer":
        rejected, strength = _wrong_answer(task, sample, rng)
        return _Pair(prompt, answer, rejected, strength, task, kind, task=task)
    if kind == "wrong_result" and sample.answer is not None and sample.answer in answer:
        wrong = _replace_last(answer, sample.answer, _corrupt(sample.answer, rng))
        return _Pair(prompt, answer, wrong, "slightly_better", task, kind, task=task)
    if kind in ("other_question", "wrong_result"):  # also the fallback of a reply without its result
        other = _other_sample(TASKS[task], sample, rng, heldout)
        return _Pair(prompt, answer, other.turns[0][1], "better", task, "other_question", task=task)
    if kind == "non_answer":
        return _Pair(prompt, answer, rng.choice(_NON_ANSWERS), "significantly_better", task, kind, task=task)
    terse = f"The answer is {sample.answer}." if sample.answer is not None else answer.split(". ")[-1]
    first, second = (answer, terse) if rng.random() < 0.5 else (terse, answer)
    return _Pair(prompt, first, second, "negligibly_better", task, kind, task=task)


def _wrong_answer(task: str, sample: Sample, rng: random.Random) -> tuple[str, str]:
    """The task's reply in the same words with a plausible wrong answer, and how much better the
    correct one is; drawn again until the reply fails the task's own check."""
    while True:
        rejected, gross = _WRONG[task](sample, rng)
        if not CHECKS[sample.check](rejected, sample.answer, sample.reject):
            return rejected, "significantly_better" if gross else "better"


def _wrong_arithmetic(sample: Sample, rng: random.Random) -> tuple[str, bool]:
    """Off by 1-3, a carry slip (off by 10) or another operation's result, everywhere the result
    appears in the worked reply."""
    op, operands = sample.key.split(":")
    a, b = map(int, operands.split(","))
    right = int(sample.answer)
    how = rng.choice(("near", "near", "carry", "operation"))
    if how == "operation":
        wrong = rng.choice([v for o, v in (("add", a + b), ("sub", abs(a - b)), ("mul", a * b)) if o != op and v != right]
                           or [right + 1])
    else:
        delta = rng.choice((-3, -2, -1, 1, 2, 3)) if how == "near" else rng.choice((-10, 10))
        wrong = right + delta if right + delta >= 0 else right - delta
    return re.sub(rf"(?<!\d){right}(?!\d)", str(wrong), sample.turns[0][1]), how == "operation"


def _wrong_count(sample: Sample, rng: random.Random) -> tuple[str, bool]:
    """A letter count off by one or two (count_letters, count_letter: "time" or "times" agreeing)."""
    reply, right = sample.turns[0][1], int(sample.answer)
    wrong = right + rng.choice((-2, -1, 1, 2))
    wrong = wrong if wrong >= 0 else right + 1
    if " appears " in reply:
        times = {n: f"{n} time" if n == 1 else f"{n} times" for n in (right, wrong)}
        return reply.replace(f"appears {times[right]}", f"appears {times[wrong]}"), False
    return _replace_last(reply, f"{right} letters", f"{wrong} letters"), False


def _misspelled(word: str, rng: random.Random) -> str:
    """A letter dropped, doubled or swapped with its neighbour."""
    i = rng.randrange(len(word))
    how = rng.choice(("drop", "double", "swap"))
    if how == "drop" and len(word) > 2:
        return word[:i] + word[i + 1:]
    if how == "swap" and i < len(word) - 1 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i] + word[i:]


def _wrong_spelling(sample: Sample, rng: random.Random) -> tuple[str, bool]:
    word = sample.answer.replace("-", "")
    return sample.turns[0][1].replace(sample.answer, spelled(_misspelled(word, rng))), False


def _wrong_reverse(sample: Sample, rng: random.Random) -> tuple[str, bool]:
    """The word left as it was (gross) or reversed with a slip."""
    back = sample.answer
    unreversed = rng.random() < 0.5
    wrong = back[::-1] if unreversed else _misspelled(back, rng)
    reply = sample.turns[0][1]
    return _replace_last(_replace_last(reply, f'"{back}"', f'"{wrong}"'), spelled(back), spelled(wrong)), unreversed


def _wrong_uppercase(sample: Sample, rng: random.Random) -> tuple[str, bool]:
    """Not capitalized at all (gross), or only the first letters or the first word."""
    upper = sample.answer
    phrase = upper.lower()
    first, _, rest = phrase.partition(" ")
    how = rng.choice(("none", "title", "first_word"))
    wrong = {"none": phrase, "title": phrase.title(),
             "first_word": f"{first.upper()} {rest}" if rest else phrase.title()}[how]
    return _replace_last(sample.turns[0][1], upper, wrong), how == "none"


def _wrong_sort(sample: Sample, rng: random.Random) -> tuple[str, bool]:
    """Sorted the other way or not at all (gross), or two neighbours swapped."""
    numbers = sample.answer.split(", ")
    how = rng.choice(("reversed", "unsorted", "swap", "swap"))
    if how == "reversed":
        wrong = ", ".join(reversed(numbers))
    elif how == "unsorted":
        wrong = ", ".join(rng.sample(numbers, len(numbers)))
    else:
        wrong = _corrupt(sample.answer, rng)
    return sample.turns[0][1].replace(sample.answer, wrong), how != "swap"


def _wrong_item(sample: Sample, rng: random.Random) -> tuple[str, bool]:
    """Another item of the list named as the first or last one."""
    return _replace_last(sample.turns[0][1], sample.answer, rng.choice(sample.reject)), False


def _wrong_comparison(sample: Sample, rng: random.Random) -> tuple[str, bool]:
    """The smaller number called larger, or Yes for No (with the relation turned round)."""
    a, b = map(int, sample.key.removeprefix("cmp:").split(","))
    if sample.check == "first_number":
        big, small = max(a, b), min(a, b)
        return f"{small} is larger than {big}.", True
    relation = "less than" if a > b else "greater than"
    return f"{'No' if sample.answer == 'Yes' else 'Yes'}, {a} is {relation} {b}.", True


_WRONG: dict[str, Callable[[Sample, random.Random], tuple[str, bool]]] = {
    **{task: _wrong_arithmetic for task in ARITHMETIC}, "count_letters": _wrong_count, "count_letter": _wrong_count,
    "spell_word": _wrong_spelling, "reverse_word": _wrong_reverse, "uppercase": _wrong_uppercase,
    "sort_numbers": _wrong_sort, "list_item": _wrong_item, "compare_numbers": _wrong_comparison,
}


def _other_sample(generate: Callable[[random.Random, bool], Sample], sample: Sample, rng: random.Random, heldout: bool) -> Sample:
    """Another sample of the same task about other values (its answer is fluent and wrong here)."""
    while True:
        other = generate(rng, heldout)
        if other.key != sample.key and other.turns[0][1] != sample.turns[0][1]:
            return other


def _corrupt(answer: str, rng: random.Random) -> str:
    """A near miss of a task's answer: a number off by 1-3, two neighbours swapped in a list or a
    word, Yes for No."""
    if re.fullmatch(r"-?\d+", answer):
        value = int(answer)
        delta = rng.choice((-3, -2, -1, 1, 2, 3))
        return str(value + delta if value + delta >= 0 else value + abs(delta))
    if answer in ("Yes", "No"):
        return "No" if answer == "Yes" else "Yes"
    parts = answer.split(", ") if ", " in answer else answer.split("-") if "-" in answer else list(answer)
    joiner = ", " if ", " in answer else "-" if "-" in answer else ""
    swaps = [i for i in range(len(parts) - 1) if parts[i] != parts[i + 1]]
    if not swaps:
        return answer + answer[-1]
    i = rng.choice(swaps)
    parts[i], parts[i + 1] = parts[i + 1], parts[i]
    return joiner.join(parts)


def _replace_last(text: str, old: str, new: str) -> str:
    head, _, tail = text.rpartition(old)
    return head + new + tail


# ---- safety ------------------------------------------------------------------------------------


def _safety_pair(kind: str, rng: random.Random, heldout: bool) -> _Pair:
    if kind == "answer_vs_false_refusal":
        sample = borderline_request(rng, heldout)
        prompt, answer = sample.turns[0]
        strength = "significantly_better" if rng.random() < 0.6 else "better"
        return _Pair(prompt, answer, rng.choice(_FALSE_REFUSALS), strength, "borderline", kind, True, True)
    sample = harmful_request(rng, heldout)
    prompt, refusal = sample.turns[0]
    harm = _HARMS[sample.key.removeprefix("harm:")]
    if kind == "refusal_vs_compliance":
        strength = "significantly_better" if rng.random() < 0.6 else "better"
        return _Pair(prompt, refusal, _compliance(harm, rng), strength, harm.category, kind, True, False)
    if kind == "guideline_vs_bare_refusal":
        return _Pair(prompt, refusal, rng.choice(_BARE_REFUSALS), "slightly_better", harm.category, kind, True, True)
    first, second = _compliance(harm, rng), _compliance(harm, rng)
    if first == second:
        second = f"{second} Good luck!"
    if rng.random() < 0.5:  # neither is preferable: which one is "chosen" is a coin flip
        first, second = second, first
    return _Pair(prompt, first, second, "negligibly_better", harm.category, kind, False, False)


def _compliance(harm: Harm, rng: random.Random) -> str:
    """A reply that complies with a harmful request, saying so without any harmful content."""
    request = re.sub(r"\b(my|myself|me|I'm|I|mine)\b", lambda m: _YOU[m.group(1)], harm.request)
    if harm.category == "hateful_harmful":
        return _COMPLY_HATE.format(x=request)
    if harm.category == "unqualified_advice":
        return _COMPLY_ADVICE.format(x=request)
    return f"{rng.choice(_COMPLY).format(x=request)} {rng.choice(_COMPLY_STEPS)}"
