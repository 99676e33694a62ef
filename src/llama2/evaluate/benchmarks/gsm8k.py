"""GSM8K (Cobbe et al., 2021), 8-shot chain of thought, maj@1 — the Llama 2 paper's "Math" half.

Data: GSM8K's public JSONL, `DATA/test.jsonl`, records {"question", "answer"} where the answer's last
line is "#### N". Prompt as lm-eval's `gsm8k_cot` (Wei et al.'s 8 exemplars, kept in
`assets/benchmarks/gsm8k_cot_exemplars.json` with their attribution):

    Q: {exemplar question}\\nA: {exemplar reasoning ... The answer is N.}\\n\\n     (x 8)
    Q: {question}\\nA:

The model continues greedily until "Q:" or a blank line. The answer is the number after "The answer
is" (lm-eval's strict-match) or, when the model never says so, the last number in the text (its
flexible-extract); both sides are normalised (commas, "$", a trailing "." or ".0" dropped) and
compared exactly. maj@1 is majority voting over one sample, i.e. one greedy answer; that is what is
computed here.

`GSM8K(num_fewshot=k)` keeps the first k exemplars (lm-eval's `num_fewshot`; 8, the paper's
protocol, by default), for a model whose context cannot hold all eight: `llama2 eval run --tasks gsm8k
--num-fewshot 2`. Another count than 8 names the task `gsm8k-Kshot`, so its results go to a folder
and a table row of their own; the count is also in each summary's settings (`options`), and the
prompt it builds is part of every request's cache key, so answers under different counts never mix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib.resources import files
from pathlib import Path

from llama2.errors import ConfigError, DataError
from llama2.evaluate.benchmarks.base import Mode, Request, Response, Sample, SampleResult, Task
from llama2.evaluate.benchmarks.loading import greedy, missing_data, read_jsonl, require_fields, take_first, use_chat
from llama2.providers.base import Capabilities, Completion, GenerateRequest

STOP = ("Q:", "\n\n")
NUM_FEWSHOT = 8  # the paper's protocol (Wei et al.'s eight exemplars)
MAX_NEW_TOKENS = 256
CHAT_INSTRUCTION = ("Solve the last problem the way the examples are solved: reason step by step and end with "
                    "\"The answer is N.\"\n\n")
_STRICT = re.compile(r"the answer is\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"-?[$0-9.,]{2,}|-?[0-9]+")  # lm-eval's flexible-extract pattern


@cache
def exemplars() -> tuple[dict[str, str], ...]:
    """Wei et al.'s 8 chain-of-thought exemplars (question, target), in their order."""
    text = files("llama2").joinpath("assets/benchmarks/gsm8k_cot_exemplars.json").read_text(encoding="utf-8")
    return tuple(json.loads(text)["exemplars"])


def build_prompt(question: str, shots: Sequence[dict[str, str]] | None = None) -> str:
    shots = exemplars() if shots is None else shots
    return "".join(f"Q: {s['question']}\nA: {s['target']}\n\n" for s in shots) + f"Q: {question}\nA:"


def normalize_number(text: str) -> str:
    """"$1,234.00" -> "1234", "5." -> "5", "0.50" -> "0.5"; text that is no number comes back stripped."""
    text = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_answer(completion: str) -> tuple[str, str]:
    """(normalised answer, how it was found: "strict", "last number" or "none")."""
    match = _STRICT.search(completion)
    if match:
        return normalize_number(match.group(1)), "strict"
    numbers = [n for n in _ANY_NUMBER.findall(completion) if any(c.isdigit() for c in n)]
    if numbers:
        return normalize_number(numbers[-1]), "last number"
    return "", "none"


def reference_answer(answer: str) -> str:
    """The number after the last "####" of a GSM8K answer, normalised."""
    return normalize_number(answer.split("####")[-1])


class GSM8K(Task):
    name = "gsm8k"
    modes = ("generate",)
    metrics = ("exact_match",)

    def __init__(self, num_fewshot: int = NUM_FEWSHOT) -> None:
        available = len(exemplars())
        if isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int) or not 0 <= num_fewshot <= available:
            raise ConfigError(f"gsm8k: --num-fewshot must be a whole number from 0 to {available} "
                              f"(the exemplars there are), got {num_fewshot!r}")
        self.num_fewshot = num_fewshot
        self.name = "gsm8k" if num_fewshot == NUM_FEWSHOT else f"gsm8k-{num_fewshot}shot"

    def options(self) -> dict[str, int]:
        return {"num_fewshot": self.num_fewshot}

    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        path = Path(data_dir) / "test.jsonl"
        if not path.is_file():
            raise missing_data("gsm8k", Path(data_dir), "test.jsonl")
        samples = []
        for i, record in enumerate(read_jsonl(path)):
            require_fields(record, ("question", "answer"), f"{path}: record {i + 1}")
            if "####" not in record["answer"]:
                raise DataError(f"{path}: record {i + 1}: answer has no '#### N' final line")
            doc = {"question": record["question"], "answer": record["answer"], "target": reference_answer(record["answer"])}
            samples.append(Sample(f"test/{i}", doc))
        return take_first(samples, limit)

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities) -> list[Request]:
        prompt = build_prompt(sample.doc["question"], exemplars()[:self.num_fewshot])
        if use_chat(capabilities):
            return [GenerateRequest([{"role": "user", "content": CHAT_INSTRUCTION + prompt}], greedy(2 * MAX_NEW_TOKENS))]
        return [GenerateRequest(prompt, greedy(MAX_NEW_TOKENS, stop=STOP))]

    def score(self, sample: Sample, mode: Mode, responses: Sequence[Response]) -> SampleResult:
        (completion,) = responses
        assert isinstance(completion, Completion)
        predicted, how = extract_answer(completion.text)
        target = sample.doc["target"]
        extra = {"mode": "generate", "extraction": how, "completion": completion.text,
                 "maj@1": "one greedy sample (majority vote over a single answer)"}
        return SampleResult(sample.id, {"exact_match": float(predicted == target)}, predicted, target, None, extra)
