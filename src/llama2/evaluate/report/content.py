"""The report's content: one JSON-ready dict holding every number the HTML, Markdown and JSON
outputs show, so the three always agree. A section is present only when its inputs were given (None
otherwise); measured figures are stored as the inputs hold them (rates as fractions), the paper's
published figures apart, under `published`, as fractions too.

```
{"title", "generated_at", "llama2_version", "citation",
 "inputs": [{"path", "kind", "what"}], "models": {spec: {"label", "color", "local"}},
 "benchmarks": {"tasks", "breakdowns"} | None,       benchmark_content
 "pairwise": {"studies", "published"} | None,         study_content
 "ladder": {"ladders"} | None, "agreement": {"entries", "published"} | None,
 "safety": {...} | None,                              safety_content
 "cost": {"rows", "models"} | None,                   cost_content
 "notes": [why something was left out]}
```
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import llama2
from llama2.errors import DataError
from llama2.evaluate.report.benchmark_content import benchmark_section
from llama2.evaluate.report.cost_content import cost_section
from llama2.evaluate.report.loading import Inputs, load_inputs
from llama2.evaluate.report.palette import model_table
from llama2.evaluate.report.published import citation
from llama2.evaluate.report.safety_content import safety_models, safety_section
from llama2.evaluate.report.study_content import agreement_section, ladder_section, pairwise_section

DEFAULT_TITLE = "The gap report"
SECTIONS = ("benchmarks", "pairwise", "ladder", "agreement", "safety", "cost")


def build_report(paths: Sequence[Path | str], *, title: str = DEFAULT_TITLE) -> dict[str, Any]:
    """Read the result folders at `paths` and compute the report's content (see the module docstring)."""
    inputs = load_inputs(list(paths))
    return report_content(inputs, title=title)


def report_content(inputs: Inputs, *, title: str = DEFAULT_TITLE) -> dict[str, Any]:
    if inputs.empty():
        raise DataError("the folders given hold no results; run llama2 eval run, pairwise, ratings import or safety first")
    notes: list[str] = []
    studies = [*inputs.pairwise, *inputs.human]
    content = {
        "title": title,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "llama2_version": llama2.__version__,
        "citation": citation(),
        "inputs": inputs.sources,
        "models": model_table(_specs(inputs)),
        "benchmarks": benchmark_section(inputs.benchmarks, notes),
        "pairwise": pairwise_section(studies),
        "ladder": ladder_section(studies, notes),
        "agreement": agreement_section(inputs.human, inputs.pairwise, notes),
        "safety": safety_section(inputs.safety),
        "cost": cost_section(inputs.benchmarks, [*inputs.pairwise, *inputs.safety]),
        "notes": notes,
    }
    return content


def _specs(inputs: Inputs) -> list[str]:
    """Every model named anywhere in the inputs, in the order the report shows them."""
    specs = [result.spec for result in inputs.benchmarks]
    for study in [*inputs.pairwise, *inputs.human, *inputs.safety]:
        specs += safety_models(study.summary) if study.kind == "safety" else study.summary.get("models", [])
        if study.summary.get("judge"):
            specs.append(study.summary["judge"]["spec"])
    return specs
