"""Ghost Attention's synthetic instructions and a transparent judge of whether a reply follows one
(Llama 2 §3.3, A.3.5; LLAMA2.md §6.1 step 4).

An instruction is a random combination of constraints of three kinds: a hobby ("You enjoy
tennis."), a language ("Always answer in French.") and a public figure ("Always act as Napoleon
from now on."). Exactly half of the instructions drawn are in the shortened form ("Hobby: tennis.
Figure: Napoleon."). The paper had Llama 2-Chat write the lists; ours are hand-written data in
`assets/gatt/constraints.json`, each name with the keywords the judge looks for.

`keyword_judge` needs no model, so its verdicts can be read and checked by hand. A hobby or figure
is followed when the reply mentions one of its keywords. A language is followed when its function
words dominate the reply (`language_followed`). Any callable `(reply, instruction) -> bool` can be
used as the judge instead, for example an LLM judge reached through a provider.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np

from llama2.errors import ConfigError, DataError

__all__ = [
    "KINDS",
    "Constraint",
    "Instruction",
    "Judge",
    "load_constraints",
    "draw_instructions",
    "keyword_judge",
    "mentions",
    "language_followed",
]

KINDS = ("hobby", "language", "figure")
_ASSET = "assets/gatt/constraints.json"
LONG_FORMS = {
    "hobby": ("You enjoy {name}.", "Your favourite hobby is {name}.", "You love {name} and bring it up whenever you can."),
    "language": ("Always answer in {name}.", "Speak in {name}.", "Only reply in {name} from now on."),
    "figure": ("Always act as {name} from now on.", "Act as {name}.", "You are {name}; answer as {name} would."),
}
SHORT_FORMS = {"hobby": "Hobby: {name}.", "language": "Language: {name}.", "figure": "Figure: {name}."}
# English function words: a reply in English is what a language constraint must beat, and foreign
# lists leave these out ("a", "in", "is", "to" ...), so an English reply never counts as foreign.
ENGLISH_WORDS = frozenset(
    "the a an and is are was were be been i you he she it we they me my your his her our their to of in on "
    "for with but not no that this these those have has had do does did so as at by or if what will can "
    "would there from about just very".split()
)
_MIN_LANGUAGE_SHARE = 0.1


@dataclass(frozen=True)
class Constraint:
    """One constraint: its kind (`KINDS`), the name instructions use, and the judge's keywords
    (for a language: its common function words)."""

    kind: str
    name: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class Instruction:
    """An instruction as the model reads it (`text`) and the constraints it combines."""

    text: str
    constraints: tuple[Constraint, ...]
    short: bool

    def to_dict(self) -> dict:
        return {"text": self.text, "short": self.short, **{c.kind: c.name for c in self.constraints}}


Judge = Callable[[str, Instruction], bool]
Constraints = Mapping[str, tuple[Constraint, ...]]


def load_constraints(path: str | Path | None = None) -> dict[str, tuple[Constraint, ...]]:
    """The constraint lists, by kind: the shipped ones, or a JSON file of the same shape
    (`{"hobby": [[name, [keyword, ...]], ...], "language": [...], "figure": [...]}`)."""
    if path is None:
        return dict(_shipped())
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such constraints file") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a JSON file ({exc})") from exc
    return _parse(raw, str(path))


@lru_cache(maxsize=1)
def _shipped() -> dict[str, tuple[Constraint, ...]]:
    return _parse(json.loads(files("llama2").joinpath(_ASSET).read_text(encoding="utf-8")), _ASSET)


def _parse(raw: object, where: str) -> dict[str, tuple[Constraint, ...]]:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object with keys {', '.join(KINDS)}")
    table = {}
    for kind in KINDS:
        entries = raw.get(kind)
        if not isinstance(entries, list) or not entries:
            raise DataError(f"{where}: {kind!r} must be a non-empty list of [name, [keyword, ...]] pairs")
        table[kind] = tuple(_constraint(kind, entry, f"{where}: {kind}[{i}]") for i, entry in enumerate(entries))
    return table


def _constraint(kind: str, entry: object, where: str) -> Constraint:
    ok = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and entry[0].strip()
          and isinstance(entry[1], list) and entry[1] and all(isinstance(k, str) and k.strip() for k in entry[1]))
    if not ok:
        raise DataError(f"{where}: expected [name, [keyword, ...]] with a non-empty name and keywords, got {entry!r:.60}")
    keywords = tuple(k.lower() for k in entry[1])
    if kind == "language":
        keywords = tuple(k for k in keywords if k not in ENGLISH_WORDS)
        if not keywords:
            raise DataError(f"{where}: every function word of {entry[0]} is also English; list words English does not use")
    return Constraint(kind, entry[0], keywords)


def draw_instructions(
    count: int, *, seed: int, constraints: Constraints | None = None, short_fraction: float = 0.5
) -> list[Instruction]:
    """`count` instructions, deterministic for `seed`: each combines 1 to 3 kinds of constraint
    (how many and which drawn uniformly), one random entry of each, in a random long-form template.
    `round(count * short_fraction)` of them, chosen at random, use the short form instead
    (LLAMA2.md §6.1: the shortened form "in half of the cases")."""
    if count < 0 or not 0.0 <= short_fraction <= 1.0:
        raise ConfigError(f"need count >= 0 and 0 <= short_fraction <= 1, got {count} and {short_fraction}")
    table = constraints or load_constraints()
    rng = np.random.default_rng(seed)
    short = set(rng.permutation(count)[: round(count * short_fraction)].tolist())
    out = []
    for i in range(count):
        n_kinds = int(rng.integers(1, len(KINDS) + 1))
        kinds = [KINDS[k] for k in sorted(rng.choice(len(KINDS), size=n_kinds, replace=False))]
        chosen = tuple(table[kind][int(rng.integers(len(table[kind])))] for kind in kinds)
        forms = [SHORT_FORMS[c.kind] if i in short else LONG_FORMS[c.kind][int(rng.integers(3))] for c in chosen]
        text = " ".join(form.format(name=c.name) for form, c in zip(forms, chosen))
        out.append(Instruction(text, chosen, i in short))
    return out


def keyword_judge(reply: str, instruction: Instruction) -> bool:
    """Whether `reply` follows every constraint of `instruction`: a hobby or figure is mentioned
    (`mentions`), a language is the one the reply is written in (`language_followed`)."""
    return all(
        language_followed(reply, c) if c.kind == "language" else mentions(reply, c.keywords)
        for c in instruction.constraints
    )


def mentions(reply: str, keywords: tuple[str, ...]) -> bool:
    """Whether `reply` holds one of `keywords` as whole words, in any case, optionally plural
    ("tennis", "Chess", "bicycles"; not "skis" inside "whiskies")."""
    return any(_keyword_pattern(k).search(reply) for k in keywords)


@lru_cache(maxsize=4096)
def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    words = r"\s+".join(re.escape(word) for word in keyword.split())
    return re.compile(rf"(?<!\w){words}(?:s|es)?(?!\w)", re.IGNORECASE)


def language_followed(reply: str, language: Constraint, others: Constraints | None = None) -> bool:
    """Whether `reply` is written in `language`, by counting function words.

    Each word of the reply that is in the language's list counts once for it. The reply follows the
    language when that count is at least 10% of its words, larger than its count of English
    function words, and no smaller than the count of any other language in `others` (the shipped
    list by default; related languages that share words may tie and both pass).
    """
    words = re.findall(r"[^\W\d_]+", reply.lower())
    if not words:
        return False
    hits = _count(words, language.keywords)
    rivals = (others or _shipped())["language"]
    return (hits >= math.ceil(_MIN_LANGUAGE_SHARE * len(words)) and hits > _count(words, ENGLISH_WORDS)
            and all(hits >= _count(words, other.keywords) for other in rivals if other.name != language.name))


def _count(words: list[str], vocabulary: tuple[str, ...] | frozenset[str]) -> int:
    vocabulary = frozenset(vocabulary)
    return sum(word in vocabulary for word in words)
