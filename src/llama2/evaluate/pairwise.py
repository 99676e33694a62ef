"""Pairwise comparisons: answers from two or more models on one prompt set, every pair of answers
judged by an LLM in both orders, and the study written as one folder (Llama 2, §3.4.2 and Fig. 2).

Both steps are evaluation tasks on the one runner (`runner.run_task`): answering is `AnswerTask`
(one generate request per prompt), judging is `judge.JudgeTask` (two requests per prompt and pair:
the answers in the study's order and swapped). Every request is cached in SQLite as it arrives, so a
killed study rerun asks only what is missing; requests run concurrently, with progress.

Outcomes are from model_a's side, model_a being the earlier of the two in the `models` list. A
judge's two verdicts must agree, else the comparison is a tie; if either is unparseable the
comparison is unusable — counted and reported, left out of the rates (`comparisons`, `verdicts`).

The study folder (written atomically, replacing an earlier one):
```
prompts.jsonl     the prompt set as run: {"id", "messages", "category", "turns"} per line
answers.jsonl     one line per model and prompt: {"model", "prompt_id", "category", "turns", "answer"
                  (null if the request failed), "error", "words", "finish_reason", "prompt_tokens",
                  "completion_tokens", "latency_s", "cost_usd"}
judgments.jsonl   one line per judge request (two per comparison): {"prompt_id", "category", "turns",
                  "model_a", "model_b", "order" ("ab": model_a shown first, "ba": swapped), "first",
                  "second", "judge", "scale", "raw" (the judge's text; null if the request failed),
                  "label" ("1".."7" or "A"/"B"/"tie"; null if unparseable), "outcome_first" (win/tie/
                  loss of the first-shown answer), "outcome" (the same from model_a's side), "error",
                  "finish_reason", "latency_s", "cost_usd"}
summary.json      {"kind": "pairwise", "models", "judge": {"spec", "identity", "scale", "template",
                  "template_sha256", "requests", "usage", "failed", "skipped_missing_answer",
                  "seconds"} or null, "prompts": {"source", "count", "categories", "multi_turn"},
                  "answers": {model: {"answered", "failed", "mean_words", "requests", "usage",
                  "seconds"}}, "pairs": [per pair: "model_a", "model_b" and the tables of
                  `comparisons.summarize`], "bias": {position and length bias over all pairs},
                  "settings", "started_at", "finished_at", "llama2_version"}
votes.csv         model_a,model_b,winner (a|b|tie), one row per usable comparison: `llama2 eval ladder` reads it
```
Without a judge only the answers are produced (`pairs` empty, `judge` null): a study for human
raters (`ratings.export_tasks`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import llama2
from llama2.atomic import atomic_folder
from llama2.errors import ConfigError, DataError, UnsupportedError
from llama2.evaluate.benchmarks.base import Mode, Request, Response, Sample, SampleResult, Task
from llama2.evaluate.cache import ResponseCache
from llama2.evaluate.comparisons import NO_CATEGORY, Comparison, ShownVerdict, summarize, votes_csv
from llama2.evaluate.judge import DEFAULT_JUDGE_PARAMS, JudgeTask, JudgeTemplate, judge_samples, sample_id
from llama2.evaluate.prompts import PromptItem, write_prompts
from llama2.evaluate.results import TaskResult
from llama2.evaluate.runner import run_task
from llama2.evaluate.verdicts import Scale, flip
from llama2.providers.base import Capabilities, Completion, GenerateRequest, Provider
from llama2.types import SamplingParams

SUMMARY_FILE, ANSWERS_FILE, JUDGMENTS_FILE = "summary.json", "answers.jsonl", "judgments.jsonl"
PROMPTS_FILE, VOTES_FILE = "prompts.jsonl", "votes.csv"
DEFAULT_ANSWER_PARAMS = SamplingParams(temperature=0.0, max_new_tokens=512)


@dataclass
class PairwiseConfig:
    """A study: the models (two or more, in the order outcomes are reported), the judge (None: answers
    only), its scale and template, and how answers and verdicts are sampled. Greedy by default, so a
    rerun gives the same answers; `system_prompt` goes in front of prompts that have none."""

    models: Sequence[str]
    judge: str | None
    scale: Scale
    template: JudgeTemplate | None
    answer_params: SamplingParams = DEFAULT_ANSWER_PARAMS
    judge_params: SamplingParams = DEFAULT_JUDGE_PARAMS
    system_prompt: str | None = None
    concurrency: int | None = None
    batch_size: int | None = None
    prompts_source: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


class AnswerTask(Task):
    """Each prompt is one sample with one generate request: the prompt's dialog."""

    name = "pairwise-answers"
    modes: tuple[Mode, ...] = ("generate",)
    metrics = ("words",)

    def __init__(self, params: SamplingParams = DEFAULT_ANSWER_PARAMS, system_prompt: str | None = None) -> None:
        self.params, self.system_prompt = params, system_prompt

    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        raise ConfigError(f"{self.name}: the prompts come from a prompt set (answer_samples), not a data folder")

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities) -> list[Request]:
        if not capabilities.chat:
            raise UnsupportedError("this model answers text completions only; pairwise comparisons need chat models")
        dialog = sample.doc["prompt"].dialog
        if self.system_prompt is not None and dialog[0]["role"] != "system":
            dialog = [{"role": "system", "content": self.system_prompt}, *dialog]
        return [GenerateRequest(dialog, self.params)]

    def score(self, sample: Sample, mode: Mode, responses: Sequence[Response]) -> SampleResult:
        (completion,) = responses
        assert isinstance(completion, Completion)
        return SampleResult(sample.id, {"words": float(word_count(completion.text))}, completion.text, "", sample.group,
                            {"finish_reason": completion.finish_reason, "prompt_tokens": completion.prompt_tokens,
                             "completion_tokens": completion.completion_tokens, "latency_s": completion.latency_s,
                             "cost_usd": completion.cost_usd})


def word_count(text: str) -> int:
    """Answer length for the length-bias table: whitespace-separated words."""
    return len(text.split())


def answer_samples(items: Sequence[PromptItem]) -> list[Sample]:
    return [Sample(item.id, {"prompt": item}, item.category) for item in items]


async def generate_answers(provider: Provider, items: Sequence[PromptItem], config: PairwiseConfig, *,
                           cache: ResponseCache, progress: bool = False) -> TaskResult:
    """One answer per prompt from `provider`, through the runner (cached, concurrent, resumable)."""
    return await run_task(provider, AnswerTask(config.answer_params, config.system_prompt), cache=cache,
                          samples=answer_samples(items), concurrency=config.concurrency,
                          batch_size=config.batch_size, progress=progress)


async def judge_answers(judge: Provider, items: Sequence[PromptItem], answers: dict[str, TaskResult],
                        config: PairwiseConfig, *, cache: ResponseCache,
                        progress: bool = False) -> tuple[TaskResult, int]:
    """Judge every pair of `config.models` on every prompt both answered, in both orders; returns the
    runner's result and the number of comparisons skipped for a missing answer."""
    assert config.template is not None
    texts = {model: {s.sample_id: s.prediction for s in result.samples} for model, result in answers.items()}
    samples, skipped = judge_samples(items, model_pairs(config.models), texts)
    task = JudgeTask(config.template, config.scale, config.judge_params)
    result = await run_task(judge, task, cache=cache, samples=samples, concurrency=config.concurrency,
                            batch_size=config.batch_size, progress=progress)
    return result, skipped


def model_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair (a, b) with a before b in `models`."""
    return [(a, b) for i, a in enumerate(models) for b in models[i + 1:]]


async def run_pairwise(config: PairwiseConfig, items: Sequence[PromptItem], *, output: Path, cache_path: Path,
                       progress: bool = False) -> dict[str, Any]:
    """Generate, judge and write the study folder `output`; returns its summary. Models are loaded one
    at a time (a local checkpoint's memory is freed before the next), the judge last."""
    from llama2.providers.registry import canonical_spec, load_provider

    models = [canonical_spec(spec) for spec in config.models]
    if len(models) < 2:
        raise ConfigError("a pairwise comparison needs at least two models; give --model twice or more")
    if len(set(models)) != len(models):
        raise ConfigError(f"the models {', '.join(config.models)} name one model twice; name each model once")
    if (config.judge is None) != (config.template is None):
        raise ConfigError("give both a judge and its prompt template, or neither (answers only)")
    config = replace(config, models=models, judge=None if config.judge is None else canonical_spec(config.judge))
    started_at = _now()
    answers: dict[str, TaskResult] = {}
    judged: tuple[TaskResult, int] | None = None
    with ResponseCache(cache_path) as cache:
        for model in models:
            async with load_provider(model) as provider:
                answers[model] = await generate_answers(provider, items, config, cache=cache, progress=progress)
        if config.judge is not None:
            async with load_provider(config.judge) as judge:
                judged = await judge_answers(judge, items, answers, config, cache=cache, progress=progress)
    study = build_study(config, items, answers, judged, started_at=started_at)
    write_study(output, study)
    return study.summary


@dataclass
class Study:
    """A finished study: the rows of each file and the summary."""

    items: Sequence[PromptItem]
    answers: list[dict[str, Any]]
    judgments: list[dict[str, Any]]
    comparisons: list[Comparison]
    summary: dict[str, Any]


def build_study(config: PairwiseConfig, items: Sequence[PromptItem], answers: dict[str, TaskResult],
                judged: tuple[TaskResult, int] | None, *, started_at: str) -> Study:
    """Turn the runner's results into the study's rows and summary (see the module docstring)."""
    answer_rows = [row for model in config.models for row in _answer_rows(model, items, answers[model])]
    words = {(row["model"], row["prompt_id"]): row["words"] for row in answer_rows}
    judgments: list[dict[str, Any]] = []
    comparisons: list[Comparison] = []
    judge_summary = None
    if judged is not None:
        result, skipped = judged
        judgments, comparisons = _judgments(config, items, result, words)
        judge_summary = {"spec": config.judge, "identity": result.identity, "scale": config.scale,
                         "template": config.template.source, "template_sha256": config.template.sha256,  # type: ignore[union-attr]
                         "requests": result.requests, "usage": vars(result.usage), "failed": len(result.failures),
                         "skipped_missing_answer": skipped, "seconds": round(result.seconds, 3)}
    tables = summarize(comparisons, config.models) if judged is not None else {"pairs": [], "bias": None}
    categories = Counter(item.category or NO_CATEGORY for item in items)
    summary = {
        "kind": "pairwise",
        "models": list(config.models),
        "judge": judge_summary,
        "prompts": {"source": config.prompts_source, "count": len(items), "categories": dict(categories),
                    "multi_turn": sum(item.turns > 1 for item in items)},
        "answers": {model: _answer_summary(result) for model, result in answers.items()},
        **tables,
        "settings": {"answer_params": _params(config.answer_params), "judge_params": _params(config.judge_params),
                     "system_prompt": config.system_prompt, "concurrency": config.concurrency,
                     "batch_size": config.batch_size, **config.settings},
        "started_at": started_at,
        "finished_at": _now(),
        "llama2_version": llama2.__version__,
    }
    return Study(items, answer_rows, judgments, comparisons, summary)


def write_study(output: Path, study: Study) -> Path:
    """Write the study folder in one atomic step (replacing an earlier one)."""
    with atomic_folder(Path(output), overwrite=True) as tmp:
        write_prompts(tmp / PROMPTS_FILE, study.items)
        _write_jsonl(tmp / ANSWERS_FILE, study.answers)
        _write_jsonl(tmp / JUDGMENTS_FILE, study.judgments)
        (tmp / VOTES_FILE).write_text(votes_csv(study.comparisons), encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(json.dumps(study.summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(output)


def read_study(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A study folder's summary and answer rows (what rating export and reports read)."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        answers = [json.loads(line) for line in (folder / ANSWERS_FILE).read_text(encoding="utf-8").splitlines() if line]
    except FileNotFoundError as error:
        raise DataError(f"{folder}: not a pairwise study folder ({Path(error.filename).name} missing); "
                        "run `llama2 eval pairwise --output DIR` first") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{folder}: a study file is not valid JSON ({error.msg}); rerun the study") from None
    if summary.get("kind") != "pairwise":
        raise DataError(f"{folder}: {SUMMARY_FILE} is not a pairwise study's summary")
    return summary, answers


def _answer_rows(model: str, items: Sequence[PromptItem], result: TaskResult) -> list[dict[str, Any]]:
    scored = {s.sample_id: s for s in result.samples}
    failed = {f.sample_id: f.error for f in result.failures}
    rows = []
    for item in items:
        row: dict[str, Any] = {"model": model, "prompt_id": item.id, "category": item.category, "turns": item.turns}
        sample = scored.get(item.id)
        if sample is None:
            row |= {"answer": None, "error": failed.get(item.id, "not answered"), "words": None}
        else:
            row |= {"answer": sample.prediction, "error": None, "words": word_count(sample.prediction), **sample.extra}
        rows.append(row)
    return rows


def _judgments(config: PairwiseConfig, items: Sequence[PromptItem], result: TaskResult,
               words: dict[tuple[str, str], int | None]) -> tuple[list[dict[str, Any]], list[Comparison]]:
    scored = {s.sample_id: s for s in result.samples}
    failed = {f.sample_id: f.error for f in result.failures}
    rows, comparisons = [], []
    for model_a, model_b in model_pairs(config.models):
        for item in items:
            key = sample_id(item.id, model_a, model_b)
            if key not in scored and key not in failed:
                continue  # an answer was missing: never judged
            base = {"prompt_id": item.id, "category": item.category, "turns": item.turns, "model_a": model_a,
                    "model_b": model_b, "judge": config.judge, "scale": config.scale}
            verdicts = scored[key].extra["verdicts"] if key in scored else [
                {"order": order, "first": first, "second": second, "raw": None, "label": None, "outcome_first": None,
                 "error": f"judge request failed: {failed[key]}", "finish_reason": None, "latency_s": None,
                 "cost_usd": None} for order, first, second in (("ab", model_a, model_b), ("ba", model_b, model_a))]
            for verdict in verdicts:
                first_side = verdict["outcome_first"]
                outcome = first_side if first_side is None or verdict["first"] == model_a else flip(first_side)
                rows.append(base | {"order": verdict["order"], "first": verdict["first"], "second": verdict["second"],
                                    **{k: v for k, v in verdict.items() if k not in ("order", "first", "second")},
                                    "outcome": outcome})
            shown = tuple(ShownVerdict(v["first"], v["outcome_first"]) for v in verdicts) if key in scored else ()
            comparisons.append(Comparison(item.id, item.category, item.turns, model_a, model_b, shown,
                                          scored[key].extra["outcome"] if key in scored else None,
                                          words.get((model_a, item.id)), words.get((model_b, item.id))))
    return rows, comparisons


def _answer_summary(result: TaskResult) -> dict[str, Any]:
    lengths = [word_count(s.prediction) for s in result.samples]
    return {"answered": len(result.samples), "failed": len(result.failures),
            "mean_words": sum(lengths) / len(lengths) if lengths else None, "requests": result.requests,
            "usage": vars(result.usage), "seconds": round(result.seconds, 3)}


def _params(params: SamplingParams) -> dict[str, Any]:
    return {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "seed": params.seed}


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
