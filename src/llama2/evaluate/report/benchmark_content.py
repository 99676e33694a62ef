"""The benchmark section: each task's primary score per model with its bootstrap 95% CI (as
`llama2 eval run` stored it), the paper's published figures for the same benchmark and metric, and
per-category breakdowns (MMLU's four subject categories; each group of other grouped tasks, such
as BBH's tasks) with intervals bootstrapped here from the stored per-sample scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama2.errors import DataError
from llama2.evaluate.benchmarks.mmlu import CATEGORIES, SUBJECT_CATEGORY
from llama2.evaluate.report.published import benchmark_figures
from llama2.evaluate.results import StoredResult
from llama2.evaluate.stats import bootstrap_mean

BREAKDOWN_RESAMPLES = 2000  # a secondary view: 2,000 resamples keep full MMLU quick at ±0.1 point
MAX_GROUPS = 60  # more groups than this are a table nobody reads; the task's score stands alone


def benchmark_section(results: Sequence[StoredResult], notes: list[str]) -> dict[str, Any] | None:
    """`{"tasks": [...], "breakdowns": [...]}` for the results given, or None without any."""
    if not results:
        return None
    by_task: dict[str, list[StoredResult]] = {}
    for result in results:
        by_task.setdefault(result.task, []).append(result)
    tasks, breakdowns = [], []
    for task, members in by_task.items():
        tasks.append(_task(task, members))
        breakdown = _breakdown(task, members, notes)
        if breakdown is not None:
            breakdowns.append({"title": tasks[-1]["title"], **breakdown})
    return {"tasks": tasks, "breakdowns": breakdowns}


def _task(task: str, members: list[StoredResult]) -> dict[str, Any]:
    metrics = {result.primary_metric for result in members}
    metric = members[0].primary_metric if len(metrics) == 1 else None
    reference = benchmark_figures(task, metric) if metric else None
    rows = []
    for result in members:
        s = result.summary
        primary = s["primary"]
        rows.append({"model": result.spec, "metric": primary["metric"], "estimator": primary.get("estimator"),
                     "estimate": primary["estimate"], "low": primary["low"], "high": primary["high"],
                     "confidence": primary.get("confidence", 0.95), "mode": s.get("mode"),
                     "n_scored": s.get("n_scored"), "n_samples": s.get("n_samples"),
                     "failed": (s.get("failures") or {}).get("count", 0)})
    return {"task": task, "title": reference["title"] if reference else task, "metric": metric or "(differs by model)",
            "rows": rows, "published": reference["figures"] if reference else []}


def _breakdown(task: str, members: list[StoredResult], notes: list[str]) -> dict[str, Any] | None:
    by = "category" if task == "mmlu" else "group"
    rows, names = [], set()
    for result in members:
        try:
            samples = result.samples()
        except DataError as error:
            notes.append(f"{task} on {result.spec}: no per-category breakdown ({error})")
            continue
        groups: dict[str, list[float]] = {}
        for sample in samples:
            group = SUBJECT_CATEGORY.get(sample.group or "") if by == "category" else sample.group
            if group is not None and result.primary_metric in sample.metrics:
                groups.setdefault(group, []).append(float(sample.metrics[result.primary_metric]))
        if len(groups) < 2 or len(groups) > MAX_GROUPS:
            continue
        for group, values in groups.items():
            interval = bootstrap_mean(values, n_resamples=BREAKDOWN_RESAMPLES, seed=0)
            rows.append({"model": result.spec, "group": group, "estimate": interval.estimate, "low": interval.low,
                         "high": interval.high, "n": len(values)})
            names.add(group)
    if not rows:
        return None
    order = [name for name in CATEGORIES if name in names] if by == "category" else sorted(names)
    models = [result.spec for result in members]
    rows.sort(key=lambda row: (order.index(row["group"]), models.index(row["model"])))
    return {"task": task, "metric": members[0].primary_metric, "by": by, "groups": order, "rows": rows,
            "resamples": BREAKDOWN_RESAMPLES}
