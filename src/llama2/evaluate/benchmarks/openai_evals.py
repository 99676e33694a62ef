"""Bring your own eval, in the OpenAI evals registry format (github.com/openai/evals).

A task spec names it on the command line (`--tasks`):

    evals:PATH/TO/registry/evals/NAME.yaml#EVAL      an eval of a registry YAML file (by its name,
                                                     e.g. `test-match`, or its full id
                                                     `test-match.s1.simple-v0`); `#EVAL` may be left
                                                     out when the file defines one eval
    evals:PATH/TO/samples.jsonl#GRADER              a samples file graded by `match` (the default),
                                                     `includes` or `fuzzy_match`

Registry YAML: an entry `NAME: {id: NAME.split.version, metrics: [...]}` points to
`NAME.split.version: {class: evals.elsuite.basic.match:Match, args: {samples_jsonl: ...}}`. The
classes understood are the three basic graders: `match:Match` (args `max_tokens`, `num_few_shot`,
`few_shot_jsonl`), `includes:Includes` (`ignore_case`) and `fuzzy_match:FuzzyMatch` (`max_tokens`).
`samples_jsonl` is found as evals finds it: an existing path as given, else under the registry's
`data/` folder (the YAML's `../../data/`), else next to the YAML.

Samples: JSONL records with `input` (a string, or chat messages [{"role", "content"}, ...]) and
`ideal` (a string or a list of acceptable strings). Graders, as evals/elsuite defines them:
- match: the answer starts with one of the ideals. Unlike evals, surrounding whitespace of the answer
  and the ideal is stripped first (a completion model's answer usually starts with a space);
- includes: an ideal occurs in the answer (optionally ignoring case);
- fuzzy_match: after evals' `normalize` (lower case, no punctuation, no articles a/an/the, single
  spaces) one of answer and ideal contains the other; also reports evals' token F1 (`f1_score`).
All are answered greedily (temperature 0), as evals does.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from llama2.errors import ConfigError, DataError
from llama2.evaluate.benchmarks.base import Mode, Request, Response, Sample, SampleResult, Task
from llama2.evaluate.benchmarks.loading import greedy, read_jsonl, take_first
from llama2.providers.base import Capabilities, Completion, GenerateRequest
from llama2.types import Dialog

PREFIX = "evals:"
CLASSES = {
    "evals.elsuite.basic.match:Match": "match",
    "evals.elsuite.basic.includes:Includes": "includes",
    "evals.elsuite.basic.fuzzy_match:FuzzyMatch": "fuzzy_match",
}
_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
_NAMED_ROLES = {"example_user": "user", "example_assistant": "assistant"}  # evals' few-shot "name" field


def normalize(text: str) -> str:
    """evals' `normalize`: lower case, drop punctuation and the articles a/an/the, collapse spaces."""
    text = "".join(char for char in text.lower() if char not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def match(answer: str, ideals: Sequence[str]) -> bool:
    return any(answer.strip().startswith(ideal.strip()) for ideal in ideals)


def includes(answer: str, ideals: Sequence[str], ignore_case: bool = False) -> bool:
    if ignore_case:
        answer, ideals = answer.lower(), [ideal.lower() for ideal in ideals]
    return any(ideal in answer for ideal in ideals)


def fuzzy_match(answer: str, ideals: Sequence[str]) -> bool:
    def one(a: str, b: str) -> bool:
        a, b = normalize(a), normalize(b)
        return a == b if not a or not b else a in b or b in a

    return any(one(answer, ideal) for ideal in ideals)


def f1_score(answer: str, ideals: Sequence[str]) -> float:
    """Best token-level F1 between the normalised answer and an ideal (evals' `f1_score`)."""
    def one(ideal: str) -> float:
        predicted, truth = normalize(answer).split(), normalize(ideal).split()
        common = sum((Counter(predicted) & Counter(truth)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(predicted), common / len(truth)
        return 2 * precision * recall / (precision + recall)

    return max(one(ideal) for ideal in ideals)


def chat_to_text(messages: Dialog) -> str:
    """evals' rendering of a chat prompt for a completion model: one message as is; otherwise each
    line "Role: content" (system messages bare), then "Assistant:" to answer."""
    if len(messages) == 1:
        return messages[0]["content"]
    prefixes = {"system": "", "user": "User: ", "assistant": "Assistant: "}
    return ("".join(f"{prefixes[m['role']]}{m['content']}\n" for m in messages) + "Assistant:").lstrip()


@dataclass(frozen=True)
class EvalSpec:
    """One resolved eval: its name, grader, samples file and grader arguments."""

    name: str
    grader: str
    samples_path: Path
    max_tokens: int = 500
    ignore_case: bool = False
    num_few_shot: int = 0
    few_shot_path: Path | None = None


def parse_spec(spec: str) -> EvalSpec:
    """`evals:PATH.yaml[#EVAL]` or `evals:PATH.jsonl[#GRADER]` -> EvalSpec (files checked to exist)."""
    body = spec.removeprefix(PREFIX)
    path_text, _, fragment = body.partition("#")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise DataError(f"{spec}: {path} not found; give `evals:PATH/TO/eval.yaml#EVAL` or `evals:PATH/TO/samples.jsonl#GRADER`")
    if path.suffix in (".yaml", ".yml"):
        return _from_registry(path, fragment)
    grader = fragment or "match"
    if grader not in CLASSES.values():
        raise ConfigError(f"{spec}: unknown grader {grader!r}; choose one of {', '.join(CLASSES.values())}")
    return EvalSpec(name=path.stem, grader=grader, samples_path=path)


def _from_registry(path: Path, wanted: str) -> EvalSpec:
    try:
        registry = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DataError(f"{path}: not a readable YAML file ({error})") from error
    if not isinstance(registry, dict):
        raise DataError(f"{path}: expected a mapping of eval names to entries")
    names = [name for name, entry in registry.items() if isinstance(entry, dict) and "id" in entry]
    if not wanted:
        if len(names) != 1:
            raise ConfigError(f"{path}: defines {len(names)} evals ({', '.join(names)}); pick one with #NAME")
        wanted = names[0]
    name, entry = wanted, registry.get(wanted)
    for _ in range(len(registry)):  # follow id aliases as evals does: NAME -> NAME.split.version
        alias = entry if isinstance(entry, str) else entry.get("id") if isinstance(entry, dict) else None
        if alias is None or alias == name:
            break
        name, entry = alias, registry.get(alias)
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: no eval {wanted!r}; choose one of {', '.join(names) or '(none)'}")
    grader = CLASSES.get(entry.get("class", ""))
    if grader is None:
        raise ConfigError(f"{path}: eval {name!r} uses class {entry.get('class')!r}; supported: {', '.join(CLASSES)}")
    args: dict[str, Any] = entry.get("args") or {}
    if not isinstance(args.get("samples_jsonl"), str):
        raise DataError(f"{path}: eval {name!r} has no args.samples_jsonl")
    few_shot = args.get("few_shot_jsonl")
    return EvalSpec(
        name=wanted, grader=grader, samples_path=_registry_file(path, args["samples_jsonl"]),
        max_tokens=int(args.get("max_tokens", 100 if grader == "fuzzy_match" else 500)),
        ignore_case=bool(args.get("ignore_case", False)), num_few_shot=int(args.get("num_few_shot", 0)),
        few_shot_path=_registry_file(path, few_shot) if isinstance(few_shot, str) else None,
    )


def _registry_file(yaml_path: Path, relative: str) -> Path:
    candidates = [Path(relative).expanduser(), yaml_path.parent.parent / "data" / relative, yaml_path.parent / relative]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DataError(f"{yaml_path}: samples file {relative!r} not found (looked at {', '.join(map(str, candidates))})")
    return found


class OpenAIEval(Task):
    """One eval of the registry format; `name` is `evals:EVAL`."""

    modes = ("generate",)

    def __init__(self, spec: str | EvalSpec) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        self.name = f"{PREFIX}{self.spec.name}"
        self.metrics = ("accuracy", "f1_score") if self.spec.grader == "fuzzy_match" else ("accuracy",)
        self._few_shot: Dialog = []

    def load(self, data_dir: Path | None = None, limit: int | None = None) -> list[Sample]:
        """The samples of the spec's file (`data_dir` is not used: the spec names the files)."""
        path = self.spec.samples_path
        samples = [Sample(f"{self.spec.name}/{i}", self._check(record, f"{path}:{i + 1}"))
                   for i, record in enumerate(read_jsonl(path))]
        if self.spec.num_few_shot:
            self._few_shot = self._load_few_shot()
        return take_first(samples, limit)

    @staticmethod
    def _check(record: dict, where: str) -> dict:
        prompt, ideal = record.get("input"), record.get("ideal")
        if not isinstance(prompt, str):
            prompt = _as_dialog(prompt, where)
        ideals = [ideal] if isinstance(ideal, str) else ideal
        if not (isinstance(ideals, list) and ideals and all(isinstance(i, str) for i in ideals)):
            raise DataError(f"{where}: 'ideal' must be a string or a non-empty list of strings")
        return {"input": prompt, "ideal": ideals}

    def _load_few_shot(self) -> Dialog:
        path = self.spec.few_shot_path
        if path is None:
            raise DataError(f"{self.name}: num_few_shot needs args.few_shot_jsonl")
        shots: Dialog = []
        for i, record in enumerate(read_jsonl(path)[: self.spec.num_few_shot]):
            shots += _as_dialog(record.get("sample"), f"{path}:{i + 1}")
        return shots

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities) -> list[Request]:
        """Chat input goes to chat-capable providers as a dialog, text input to completion-capable
        ones as text; otherwise each is converted (text -> one user message; chat -> evals' text)."""
        prompt = sample.doc["input"]
        if not isinstance(prompt, str) and self._few_shot:  # evals: shots go before the last message
            prompt = prompt[:-1] + self._few_shot + prompt[-1:]
        if isinstance(prompt, str) and not capabilities.text_completion:
            prompt = [{"role": "user", "content": prompt}]
        elif not isinstance(prompt, str) and not capabilities.chat:
            prompt = chat_to_text(prompt)
        return [GenerateRequest(prompt, greedy(self.spec.max_tokens))]

    def score(self, sample: Sample, mode: Mode, responses: Sequence[Response]) -> SampleResult:
        (completion,) = responses
        assert isinstance(completion, Completion)
        ideals = sample.doc["ideal"]
        graders: dict[str, Callable[[], bool]] = {
            "match": lambda: match(completion.text, ideals),
            "includes": lambda: includes(completion.text, ideals, self.spec.ignore_case),
            "fuzzy_match": lambda: fuzzy_match(completion.text, ideals),
        }
        metrics = {"accuracy": float(graders[self.spec.grader]())}
        if self.spec.grader == "fuzzy_match":
            metrics["f1_score"] = f1_score(completion.text, ideals)
        extra = {"mode": "generate", "grader": self.spec.grader}
        return SampleResult(sample.id, metrics, completion.text, " | ".join(ideals), None, extra)


def _as_dialog(messages: Any, where: str) -> Dialog:
    """evals chat messages -> our Dialog; few-shot `name: example_user/example_assistant` become roles."""
    if not (isinstance(messages, list) and messages):
        raise DataError(f"{where}: 'input' must be a string or a non-empty list of chat messages")
    dialog: Dialog = []
    for message in messages:
        if not (isinstance(message, dict) and isinstance(message.get("content"), str)):
            raise DataError(f"{where}: each chat message needs 'role' and a string 'content'")
        role = _NAMED_ROLES.get(message.get("name", ""), _ROLES.get(message.get("role", "")))
        if role is None:
            raise DataError(f"{where}: unknown chat role {message.get('role')!r}; use system, user or assistant")
        dialog.append({"role": role, "content": message["content"]})
    return dialog
