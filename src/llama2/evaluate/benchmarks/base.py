"""The one shape every benchmark takes: samples in, provider requests out, scores back.

A `Task` never calls a model. It turns each sample into requests (log-likelihood pairs or generate
requests), and scores the responses the runner brings back. That split lets the runner batch,
cache and resume every request the same way for every task, and lets one task run against a local
checkpoint (by log-likelihood, as the Llama 2 paper did) and a chat API (by generation) alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any, Literal

from llama2.providers.base import Capabilities, Completion, GenerateRequest, Loglikelihood, LoglikelihoodRequest

Mode = Literal["loglikelihood", "generate"]
Request = LoglikelihoodRequest | GenerateRequest
Response = Loglikelihood | Completion


@dataclass(frozen=True)
class Sample:
    """One benchmark item. `id` is stable across runs (it keys per-sample results); `doc` holds the
    task's own fields (question, choices, answer, ...); `group` is the sub-score it counts towards
    (an MMLU subject, a BBH task), or None."""

    id: str
    doc: dict[str, Any]
    group: str | None = None


@dataclass
class SampleResult:
    """How a model did on one sample: metric values (1.0/0.0 for accuracy), what it answered and
    what was expected, as text a person can read in the per-sample JSONL."""

    sample_id: str
    metrics: dict[str, float]
    prediction: str
    target: str
    group: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """A benchmark. Subclasses set `name`, `modes` (supported, preferred first), `metrics` (the
    primary one first) and implement loading, request building and scoring."""

    name: str
    modes: tuple[Mode, ...]
    metrics: tuple[str, ...]

    @abstractmethod
    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        """Read the samples from `data_dir` (the benchmark's public file layout); the first `limit`
        of them in a deterministic order when given. Missing or malformed files are `DataError`s
        that name the file and say how to get it (`llama2 data fetch NAME`)."""

    @abstractmethod
    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities) -> list[Request]:
        """The model calls this sample needs. In `generate` mode a chat-only provider gets dialogs,
        a completion provider gets text."""

    @abstractmethod
    def score(self, sample: Sample, mode: Mode, responses: Sequence[Response]) -> SampleResult:
        """Score one sample from the responses to its requests (same order)."""

    def options(self) -> dict[str, Any]:
        """The protocol settings this task instance was made with (e.g. gsm8k's `num_fewshot`),
        recorded in each result's `settings` so runs under different settings are told apart."""
        return {}

    def mode_for(self, capabilities: Capabilities) -> Mode:
        """Log-likelihood where both task and provider support it (the paper's protocol), else generation."""
        if "loglikelihood" in self.modes and capabilities.loglikelihood:
            return "loglikelihood"
        if "generate" in self.modes:
            return "generate"
        return "loglikelihood"

    def aggregate(self, results: Sequence[SampleResult]) -> dict[str, float]:
        """Task-level scores: the mean of each metric over samples. Tasks with groups (MMLU) add
        per-group means and a macro average."""
        return {name: fmean(r.metrics[name] for r in results) for name in self.metrics} if results else {}
