"""Evaluation results on disk: one folder per model and task, written atomically, read back by
comparisons and the report.

Layout under an output folder:
```
OUTPUT/<model-slug>/<task-slug>/summary.json    model spec and identity, task, mode, metrics, primary
                                                metric with its bootstrap 95% CI, sample and failure
                                                counts, requests (cached/sent), usage, timestamps, version
OUTPUT/<model-slug>/<task-slug>/samples.jsonl   one line per scored sample: id, group, metrics,
                                                prediction, target, extra
```
A slug is the name with every run of characters outside `[A-Za-z0-9._-]` turned into `-`
(`local:/ckpt/llama-2-7b` -> `local-ckpt-llama-2-7b`, `evals:arithmetic` -> `evals-arithmetic`);
`summary.json` keeps the exact spec and task name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import llama2
from llama2.atomic import atomic_folder
from llama2.errors import DataError
from llama2.evaluate.benchmarks.base import Mode, SampleResult
from llama2.evaluate.stats import estimator_name, metric_interval

SUMMARY_FILE = "summary.json"
SAMPLES_FILE = "samples.jsonl"
_MAX_SLUG = 80


@dataclass(frozen=True)
class SampleFailure:
    """A sample left unscored because one of its requests failed after the provider's retries."""

    sample_id: str
    group: str | None
    error: str


@dataclass
class Usage:
    """What a task's responses cost: tokens and dollars summed over completions (`cost_usd` None when
    no completion had a known price), and generation latency percentiles."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None


@dataclass
class TaskResult:
    """One model on one task: what the runner returns and `write_result` stores."""

    task: str
    mode: Mode
    spec: str
    identity: str
    primary_metric: str
    metrics: dict[str, float]
    samples: list[SampleResult]
    failures: list[SampleFailure]
    n_samples: int
    requests: dict[str, int]
    usage: Usage
    started_at: str
    finished_at: str
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def primary(self) -> dict[str, Any]:
        """The primary metric over scored samples with its bootstrap 95% CI (None without samples)."""
        if not self.samples:
            return {"metric": self.primary_metric, "estimator": None, "estimate": None, "low": None, "high": None,
                    "confidence": 0.95}
        interval = metric_interval(self.samples, self.primary_metric)
        return {"metric": self.primary_metric, "estimator": estimator_name(self.samples)} | interval.to_dict()

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary (what `summary.json` holds)."""
        return {
            "model": self.spec,
            "identity": self.identity,
            "task": self.task,
            "mode": self.mode,
            "metrics": self.metrics,
            "primary": self.primary,
            "n_samples": self.n_samples,
            "n_scored": len(self.samples),
            "failures": {"count": len(self.failures),
                         "samples": [{"id": f.sample_id, "group": f.group, "error": f.error} for f in self.failures]},
            "requests": self.requests,
            "usage": vars(self.usage),
            "settings": self.settings,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": round(self.seconds, 3),
            "llama2_version": llama2.__version__,
        }


@dataclass
class StoredResult:
    """A results folder read back: its summary, and its per-sample results on demand."""

    folder: Path
    summary: dict[str, Any]

    @property
    def spec(self) -> str:
        return self.summary["model"]

    @property
    def task(self) -> str:
        return self.summary["task"]

    @property
    def primary_metric(self) -> str:
        return self.summary["primary"]["metric"]

    def samples(self) -> list[SampleResult]:
        return read_samples(self.folder / SAMPLES_FILE)


def slug(name: str) -> str:
    """A folder name for a model spec or task name (see the module docstring); long names keep a hash suffix."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "unnamed"
    if len(text) > _MAX_SLUG:
        text = f"{text[:_MAX_SLUG - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return text


def result_folder(output: Path, spec: str, task: str) -> Path:
    return Path(output) / slug(spec) / slug(task)


def write_result(output: Path, result: TaskResult) -> Path:
    """Write `result` under `output` (replacing an earlier run of the same model and task) in one
    atomic step; returns the folder."""
    folder = result_folder(output, result.spec, result.task)
    with atomic_folder(folder, overwrite=True) as tmp:
        (tmp / SUMMARY_FILE).write_text(json.dumps(result.summary(), indent=2, ensure_ascii=False) + "\n")
        with open(tmp / SAMPLES_FILE, "w", encoding="utf-8") as handle:
            for sample in result.samples:
                handle.write(json.dumps({"id": sample.sample_id, "group": sample.group, "metrics": sample.metrics,
                                         "prediction": sample.prediction, "target": sample.target,
                                         "extra": sample.extra}, ensure_ascii=False) + "\n")
    return folder


def read_result(folder: Path) -> StoredResult:
    """Read one `<model-slug>/<task-slug>` folder."""
    path = Path(folder) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no evaluation summary here; run `llama2 eval run --output ...` first") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); rerun the evaluation") from None
    return StoredResult(Path(folder), summary)


def read_results(output: Path) -> list[StoredResult]:
    """Every result under an output folder, sorted by model folder and task."""
    output = Path(output)
    if not output.is_dir():
        raise DataError(f"{output}: results folder not found; run `llama2 eval run --output {output}` first")
    return [read_result(path.parent) for path in sorted(output.glob(f"*/*/{SUMMARY_FILE}"))]


def read_samples(path: Path) -> list[SampleResult]:
    """Per-sample results from a `samples.jsonl`."""
    samples = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                row = json.loads(line)
                samples.append(SampleResult(row["id"], row["metrics"], row["prediction"], row["target"],
                                            row.get("group"), row.get("extra", {})))
    except FileNotFoundError:
        raise DataError(f"{path}: per-sample results not found; rerun the evaluation") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{path}:{number}: not a per-sample result line ({error}); rerun the evaluation") from None
    return samples

