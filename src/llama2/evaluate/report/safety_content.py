"""The safety section, from `llama2 eval safety` folders (schema in `evaluate/safety.py`): per model
the violation rate on the adversarial set and the false-refusal rate on the borderline set, each
with its 95% CI (the trade-off point the study itself chose: people's violation rate where there
are human ratings, the judge's false refusals where there is a judge, else the rules'), both
false-refusal estimates side by side, and the violation rate per risk category and turn count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama2.evaluate.report.loading import Study
from llama2.evaluate.report.published import safety_figures


def safety_models(summary: dict[str, Any]) -> list[str]:
    return list(summary.get("models", []))


def safety_section(studies: Sequence[Study]) -> dict[str, Any] | None:
    """`{"models", "categories", "false_refusal_categories", "published"}`, or None without a study."""
    if not studies:
        return None
    models, categories, refusals = [], [], []
    for study in studies:
        summary = study.summary
        chosen = {point["model"]: point.get("false_refusal_source") for point in summary.get("tradeoff", [])}
        for spec in summary.get("models", []):
            result = summary["results"][spec]
            models.append(_model_row(study, spec, result, chosen.get(spec)))
            violation = result.get("violation")
            if violation:
                for group in ("by_category", "by_turns"):
                    categories += [{"model": spec, "category": name, "violation": _rate(rate)}
                                   for name, rate in (violation.get(group) or {}).items() if rate]
            for name, rates in ((result.get("false_refusal") or {}).get("by_category") or {}).items():
                refusals.append({"model": spec, "category": name, "rules": _rate(rates.get("rules")),
                                 "judge": _rate(rates.get("judge"))})
    return {"models": models, "categories": categories, "false_refusal_categories": refusals,
            "published": safety_figures()}


def _model_row(study: Study, spec: str, result: dict[str, Any], chosen: str | None) -> dict[str, Any]:
    violation = result.get("violation")
    refusal = result.get("false_refusal") or {}
    return {"model": spec, "source": str(study.folder),
            "violation": _rate(violation["overall"]) if violation else None,
            "violation_source": f"{violation['source']} ({violation['rater']})" if violation else None,
            "mean_rating": _rate(violation.get("mean_rating")) if violation else None,
            "false_refusal": _rate(refusal.get(chosen)) if chosen else None, "false_refusal_source": chosen,
            "false_refusal_rules": _rate(refusal.get("rules")), "false_refusal_judge": _rate(refusal.get("judge")),
            "refusal_adversarial_rules": _rate((result.get("refusal_adversarial") or {}).get("rules")),
            "n_adversarial": result.get("n_adversarial"), "n_borderline": result.get("n_borderline")}


def _rate(rate: dict[str, Any] | None) -> dict[str, Any] | None:
    if not rate:
        return None
    return {key: rate.get(key) for key in ("estimate", "low", "high", "n")}
