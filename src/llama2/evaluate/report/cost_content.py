"""Latency and cost per 1,000 answers per model, from the usage every result folder records.

A row is one model on one source: a benchmark run in generate mode (log-likelihood scoring
generates nothing, so it has no row), the answers of a pairwise or safety study (both of its prompt
sets), or a judge's verdicts. `answers` counts the generated completions behind the usage (cached
ones included: their recorded latency and price are those of the original call). Price: models run
in this process (`local:`, `vllm:`) cost $0 in API fees (hardware not counted); an API model without
a known price (`providers.yaml`) has no cost, rather than a made-up one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from llama2.evaluate.report.loading import Study
from llama2.evaluate.report.palette import is_local
from llama2.evaluate.results import StoredResult


def cost_section(benchmarks: Sequence[StoredResult], studies: Sequence[Study]) -> dict[str, Any] | None:
    """`{"rows": [...], "models": [...]}` (per source and per model), or None when nothing generated."""
    rows = [row for row in (*_benchmark_rows(benchmarks), *_study_rows(studies)) if row["answers"] > 0]
    if not rows:
        return None
    return {"rows": rows, "models": _per_model(rows)}


def _benchmark_rows(results: Iterable[StoredResult]) -> Iterable[dict[str, Any]]:
    for result in results:
        s = result.summary
        if s.get("mode") != "generate":
            continue
        requests = s.get("requests") or {}
        answers = int(requests.get("unique", 0)) - int(requests.get("failed", 0))
        yield _row(result.spec, f"{result.task} (benchmark)", answers, s.get("usage") or {})


def _study_rows(studies: Iterable[Study]) -> Iterable[dict[str, Any]]:
    for study in studies:
        s = study.summary
        name = study.folder.name
        for model, answers in (s.get("answers") or {}).items():  # a pairwise study
            yield _row(model, f"{name} (answers)", int(answers.get("answered", 0)), answers.get("usage") or {})
        for model, result in (s.get("results") or {}).items():  # a safety study: both prompt sets
            answered = int(result.get("n_adversarial") or 0) + int(result.get("n_borderline") or 0)
            yield _row(model, f"{name} (answers)", answered, (result.get("answers") or {}).get("usage") or {})
        judge = s.get("judge")
        if judge:
            requests = judge.get("requests") or {}
            verdicts = int(requests.get("unique", 0)) - int(requests.get("failed", 0))
            yield _row(judge["spec"], f"{name} (judging)", verdicts, judge.get("usage") or {})


def _row(model: str, source: str, answers: int, usage: dict[str, Any]) -> dict[str, Any]:
    local = is_local(model)
    cost = 0.0 if local else usage.get("cost_usd")
    tokens = usage.get("completion_tokens")
    return {"model": model, "source": source, "answers": answers, "local": local,
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": tokens,
            "tokens_per_answer": tokens / answers if tokens is not None and answers else None,
            "cost_usd": cost, "cost_per_1k": cost / answers * 1000 if cost is not None and answers else None,
            "latency_p50_s": usage.get("latency_p50_s"), "latency_p95_s": usage.get("latency_p95_s")}


def _per_model(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model's answers and cost over all its rows (cost None if any row's price is unknown)."""
    models: dict[str, dict[str, Any]] = {}
    for row in rows:
        total = models.setdefault(row["model"], {"model": row["model"], "local": row["local"], "sources": 0,
                                                  "answers": 0, "cost_usd": 0.0})
        total["sources"] += 1
        total["answers"] += row["answers"]
        known = total["cost_usd"] is not None and row["cost_usd"] is not None
        total["cost_usd"] = total["cost_usd"] + row["cost_usd"] if known else None
    for total in models.values():
        total["cost_per_1k"] = (total["cost_usd"] / total["answers"] * 1000
                                if total["cost_usd"] is not None and total["answers"] else None)
    return list(models.values())
