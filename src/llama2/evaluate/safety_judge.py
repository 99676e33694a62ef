"""An LLM judge of single answers for the safety evaluation, as one evaluation task on the runner:
each sample is one model's answer to one prompt, with one request — rate it on the 5-point safety
scale (adversarial prompts) or say whether it refuses (borderline prompts). The runner caches,
batches, resumes and shows progress for it as for any benchmark.

Judge prompts are template files with named fields in braces (`str.format` syntax; write a literal
brace as `{{` or `}}`):
- `{conversation}`: the conversation up to its last user turn (`[User]`, `[Assistant]`, `[System]` blocks);
- `{question}`: the last user message alone;
- `{answer}`: the answer judged (required);
- `{category}`: the prompt's risk category (empty when it has none).
The defaults are `assets/judge_prompts/safety5.txt` (asks for `Rating: [[N]]`, N in 1..5) and
`refusal.txt` (asks for `Label: [[refusal]]` or `Label: [[answer]]`); a custom template must ask
for the same form (`safety_ratings.parse_safety_rating`, `parse_refusal_label`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llama2.errors import ConfigError
from llama2.evaluate.benchmarks.base import Mode, Request, Response, Sample, SampleResult, Task
from llama2.evaluate.judge import DEFAULT_JUDGE_PARAMS, bundled_template, read_template_file, render_conversation
from llama2.evaluate.prompts import PromptItem
from llama2.evaluate.safety_ratings import parse_refusal_label, parse_safety_rating
from llama2.providers.base import Capabilities, Completion, GenerateRequest
from llama2.types import SamplingParams

JudgeKind = Literal["rating", "refusal"]
FIELDS = ("conversation", "question", "answer", "category")
DEFAULT_TEMPLATES: dict[JudgeKind, str] = {"rating": "safety5", "refusal": "refusal"}


@dataclass(frozen=True)
class AnswerTemplate:
    """A judge prompt about one answer; `source` says where it came from (a path or `default:NAME`)."""

    text: str
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, item: PromptItem, answer: str) -> str:
        return self.text.format(conversation=render_conversation(item), question=item.messages[-1]["content"].strip(),
                                answer=answer.strip(), category=item.category or "")


def load_answer_template(path: str | Path | None, kind: JudgeKind) -> AnswerTemplate:
    """The template at `path`, or the bundled default for `kind`; checked before any model is loaded."""
    if path is None:
        return AnswerTemplate(bundled_template(DEFAULT_TEMPLATES[kind]), f"default:{DEFAULT_TEMPLATES[kind]}")
    text = read_template_file(path, FIELDS, required=("answer",), kind="a safety judge template",
                              needs="the judge must see the answer it judges")
    return AnswerTemplate(text, str(Path(path).expanduser()))


class SafetyJudgeTask(Task):
    """Samples carry `doc = {"kind", "prompt", "model", "answer"}`; one request each, with the
    template of its kind. `score` keeps the judge's text and what was read from it:
    `extra["value"]` (a rating 1..5, or True/False for refused; None when unparseable) and `extra["error"]`."""

    name = "safety-judge"
    modes: tuple[Mode, ...] = ("generate",)
    metrics = ("parsed",)

    def __init__(self, templates: dict[JudgeKind, AnswerTemplate], params: SamplingParams = DEFAULT_JUDGE_PARAMS) -> None:
        self.templates, self.params = templates, params

    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        raise ConfigError(f"{self.name}: judging samples come from generated answers (judge_samples), not a data folder")

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities) -> list[Request]:
        doc = sample.doc
        text = self.templates[doc["kind"]].render(doc["prompt"], doc["answer"])
        return [GenerateRequest([{"role": "user", "content": text}] if capabilities.chat else text, self.params)]

    def score(self, sample: Sample, mode: Mode, responses: Sequence[Response]) -> SampleResult:
        (response,) = responses
        assert isinstance(response, Completion)
        parse = parse_safety_rating if sample.doc["kind"] == "rating" else parse_refusal_label
        parsed = parse(response.text)
        return SampleResult(sample.id, {"parsed": float(parsed.value is not None)}, response.text, "", sample.group,
                            {"value": parsed.value, "error": parsed.error, "finish_reason": response.finish_reason,
                             "latency_s": response.latency_s, "cost_usd": response.cost_usd})


def judge_samples(kind: JudgeKind, items: Sequence[PromptItem], answers: dict[str, dict[str, str]]) -> list[Sample]:
    """One sample per model and prompt with an answer; `answers[model][prompt_id]` is its text."""
    samples = []
    for model, texts in answers.items():
        for item in items:
            if item.id in texts:
                doc: dict[str, Any] = {"kind": kind, "prompt": item, "model": model, "answer": texts[item.id]}
                samples.append(Sample(judge_sample_id(kind, model, item.id), doc, item.category))
    return samples


def judge_sample_id(kind: JudgeKind, model: str, prompt_id: str) -> str:
    return "\x1f".join((kind, model, prompt_id))
