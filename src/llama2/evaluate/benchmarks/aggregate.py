"""Scores of grouped benchmarks (MMLU subjects, BBH tasks): per-group means and the two averages."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from llama2.evaluate.benchmarks.base import SampleResult


def group_means(results: Sequence[SampleResult], metric: str) -> dict[str, float]:
    """Mean of `metric` per group, groups in name order."""
    values: dict[str, list[float]] = {}
    for result in results:
        values.setdefault(result.group or "", []).append(result.metrics[metric])
    return {group: fmean(values[group]) for group in sorted(values)}


def grouped_scores(results: Sequence[SampleResult], metric: str, label: str) -> dict[str, float]:
    """`{metric}`: the macro average (each group weighs the same); `{metric}_micro`: the mean over
    samples; `{metric},{label}=NAME`: each group's mean."""
    if not results:
        return {}
    per_group = group_means(results, metric)
    scores = {metric: fmean(per_group.values()), f"{metric}_micro": fmean(r.metrics[metric] for r in results)}
    return scores | {f"{metric},{label}={group}": value for group, value in per_group.items()}
