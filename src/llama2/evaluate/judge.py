"""An LLM judge as an evaluation task: each sample is one prompt and one pair of answers, asked in
both orders (position swap), so the runner caches, batches, resumes and shows progress for judging
exactly as for a benchmark.

The judge prompt is a template file with named fields in braces (`str.format` syntax; write a
literal brace as `{{` or `}}`):
- `{conversation}`: the conversation up to and including the last user turn, one block per message
  (`[System]`, `[User]`, `[Assistant]` headers);
- `{question}`: the last user message alone;
- `{answer_a}`, `{answer_b}`: the answer shown first and second (both required).
The defaults are `assets/judge_prompts/likert7.txt` and `wtl.txt`. A custom template must ask for the
verdict in the form `verdicts.parse_verdict` reads (`Verdict: [[N]]` or `Verdict: [[A]]`).
The judge sees the template as one user message (or as plain text if it is a completion model).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from llama2.errors import ConfigError
from llama2.evaluate.benchmarks.base import Mode, Request, Response, Sample, SampleResult, Task
from llama2.evaluate.comparisons import combine_swapped
from llama2.evaluate.prompts import PromptItem
from llama2.evaluate.verdicts import Scale, flip, parse_verdict
from llama2.providers.base import Capabilities, Completion, GenerateRequest
from llama2.types import SamplingParams

FIELDS = ("conversation", "question", "answer_a", "answer_b")
REQUIRED = ("answer_a", "answer_b")
ORDERS = ("ab", "ba")  # "ab": model_a's answer shown first; "ba": swapped
DEFAULT_JUDGE_PARAMS = SamplingParams(temperature=0.0, max_new_tokens=512)


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt with its named fields; `source` says where it came from (a path or `default:SCALE`)."""

    text: str
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, item: PromptItem, first: str, second: str) -> str:
        return self.text.format(conversation=render_conversation(item), question=item.messages[-1]["content"].strip(),
                                answer_a=first.strip(), answer_b=second.strip())


def load_template(path: str | Path | None, scale: Scale) -> JudgeTemplate:
    """The template at `path`, or the default one for `scale`; checked before any model is loaded."""
    if path is None:
        return JudgeTemplate(bundled_template(scale), f"default:{scale}")
    text = read_template_file(path, FIELDS, required=REQUIRED, kind="a judge template",
                              needs="the judge must see both answers")
    return JudgeTemplate(text, str(Path(path).expanduser()))


def bundled_template(name: str) -> str:
    return files("llama2").joinpath(f"assets/judge_prompts/{name}.txt").read_text(encoding="utf-8")


def read_template_file(path: str | Path, fields: Sequence[str], *, required: Sequence[str], kind: str, needs: str) -> str:
    """The text of a judge template file whose `{fields}` are all known and include `required`; a
    ConfigError naming the file and the problem otherwise (`kind` and `needs` word it for the judge)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: judge prompt template not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the judge prompt template ({error})") from None
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as error:
        raise ConfigError(f"{path}: not a valid template ({error}); write a literal brace as {{{{ or }}}}") from None
    unknown = sorted(names - set(fields))
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; "
                          f"{kind} may use {', '.join('{' + n + '}' for n in fields)} "
                          "(write a literal brace as {{ or }})")
    missing = [name for name in required if name not in names]
    if missing:
        raise ConfigError(f"{path}: the template never shows {', '.join('{' + n + '}' for n in missing)}; {needs}")
    return text


def render_conversation(item: PromptItem) -> str:
    """The prompt's messages as `[User]`/`[Assistant]`/`[System]` blocks."""
    return "\n\n".join(f"[{m['role'].capitalize()}]\n{m['content'].strip()}" for m in item.messages)


class JudgeTask(Task):
    """Samples are (prompt, model_a, model_b) with both answers in `doc`; two requests each, the
    answers in the study's order ("ab") and swapped ("ba"). `score` reads both verdicts, turns them
    to model_a's side and combines them (`combine_swapped`): `extra["outcome"]` (None when unusable), and `extra["verdicts"]`
    with each raw text."""

    modes: tuple[Mode, ...] = ("generate",)
    metrics = ("parsed",)  # share of the two verdicts that could be read

    def __init__(self, template: JudgeTemplate, scale: Scale, params: SamplingParams = DEFAULT_JUDGE_PARAMS) -> None:
        self.template, self.scale, self.params = template, scale, params
        self.name = f"pairwise-judge-{scale}"

    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        raise ConfigError(f"{self.name}: judging samples come from generated answers (judge_samples), not a data folder")

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities) -> list[Request]:
        doc = sample.doc
        texts = [self.template.render(doc["prompt"], doc["answer_a"], doc["answer_b"]),
                 self.template.render(doc["prompt"], doc["answer_b"], doc["answer_a"])]
        return [GenerateRequest([{"role": "user", "content": text}] if capabilities.chat else text, self.params)
                for text in texts]

    def score(self, sample: Sample, mode: Mode, responses: Sequence[Response]) -> SampleResult:
        doc = sample.doc
        verdicts = []
        for order, response in zip(ORDERS, responses):
            assert isinstance(response, Completion)
            verdict = parse_verdict(response.text, self.scale)
            first, second = (doc["model_a"], doc["model_b"]) if order == "ab" else (doc["model_b"], doc["model_a"])
            verdicts.append({"order": order, "first": first, "second": second, "raw": response.text,
                             "label": verdict.label, "outcome_first": verdict.outcome, "error": verdict.error,
                             "finish_reason": response.finish_reason, "latency_s": response.latency_s,
                             "cost_usd": response.cost_usd})
        ab, ba = (v["outcome_first"] for v in verdicts)
        outcome = combine_swapped([ab, None if ba is None else flip(ba)])
        parsed = sum(v["label"] is not None for v in verdicts) / len(verdicts)
        return SampleResult(sample.id, {"parsed": parsed}, outcome or "unusable", "", sample.group,
                            {"outcome": outcome, "verdicts": verdicts})


def judge_samples(items: Sequence[PromptItem], pairs: Sequence[tuple[str, str]],
                  answers: dict[str, dict[str, str]]) -> tuple[list[Sample], int]:
    """One sample per prompt and pair whose two answers both exist, and how many were skipped for a
    missing answer. `answers[model][prompt_id]` is the answer text."""
    samples, skipped = [], 0
    for model_a, model_b in pairs:
        for item in items:
            first, second = answers[model_a].get(item.id), answers[model_b].get(item.id)
            if first is None or second is None:
                skipped += 1
                continue
            doc: dict[str, Any] = {"prompt": item, "model_a": model_a, "model_b": model_b,
                                   "answer_a": first, "answer_b": second}
            samples.append(Sample(sample_id(item.id, model_a, model_b), doc, item.category))
    return samples, skipped


def sample_id(prompt_id: str, model_a: str, model_b: str) -> str:
    return "\x1f".join((prompt_id, model_a, model_b))
