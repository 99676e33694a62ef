"""The Llama 2 paper's published figures (`published.yaml`, each with its table or figure), read as
fractions like the measured results, so the report can set them side by side and label them as
published, never as measured."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import yaml


@cache
def published() -> dict[str, Any]:
    """The YAML asset as it is (percentages as printed in the paper)."""
    return yaml.safe_load(files("llama2.evaluate.report").joinpath("published.yaml").read_text(encoding="utf-8"))


def benchmark_figures(task: str, metric: str) -> dict[str, Any] | None:
    """`{"title", "figures": [{"model", "value" (a fraction), "source"}]}` for a task measured with
    the paper's metric, else None (a different metric is a different number)."""
    entry = published()["benchmarks"].get(task)
    if entry is None or entry["metric"] != metric:
        return None
    return {"title": entry["title"],
            "figures": [{"model": f["model"], "value": _fraction(f["value"]), "source": f["source"]}
                        for f in entry["figures"]]}


def pairwise_figures() -> dict[str, Any]:
    """The paper's human win/tie/loss figures, as fractions."""
    entry = published()["pairwise"]
    return {"source": entry["source"],
            "comparisons": [{**c, **{k: _fraction(c[k]) for k in ("win", "tie", "loss")}} for c in entry["comparisons"]]}


def agreement_figures() -> list[dict[str, Any]]:
    return [dict(entry) for entry in published()["agreement"]]


def safety_figures() -> dict[str, Any]:
    entry = published()["safety"]
    refusal = entry["false_refusal_borderline"]
    return {"false_refusal_borderline": {"low": _fraction(refusal["low"]), "high": _fraction(refusal["high"]),
                                         "source": refusal["source"]},
            "note": entry["note"]}


def citation() -> str:
    return published()["paper"]


def _fraction(percent: float) -> float:
    return round(percent / 100, 6)
