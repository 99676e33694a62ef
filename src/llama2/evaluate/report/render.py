"""The report's content written three ways: a self-contained HTML page (inline CSS and SVG plots, no
script, no external resource), Markdown (the same tables, no plots) and JSON (the content dict
itself). Templates live in `templates/`; every output is written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from llama2.atomic import write_text
from llama2.evaluate.report import figures


def render_html(content: dict[str, Any]) -> str:
    """The page: every section present in `content`, each with its plots and tables."""
    return _environment().get_template("report.html.j2").render(c=content, fig=draw_figures(content))


def render_markdown(content: dict[str, Any]) -> str:
    return _environment().get_template("report.md.j2").render(c=content)


def render_json(content: dict[str, Any]) -> str:
    """The content as strict JSON: a statistic that came out undefined (NaN) is written as null."""
    return json.dumps(_finite(content), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(content: dict[str, Any], *, html: Path | None = None, markdown: Path | None = None,
                 json_path: Path | None = None) -> list[Path]:
    """Render and write each output asked for (each atomically); returns the paths written."""
    written = []
    for path, render in ((html, render_html), (markdown, render_markdown), (json_path, render_json)):
        if path is not None:
            written.append(write_text(Path(path), render(content)))
    return written


def draw_figures(content: dict[str, Any]) -> dict[str, Any]:
    """Every plot of the page, as inline SVG, keyed by section (lists in the order of the content)."""
    models = content["models"]
    drawn: dict[str, Any] = {}
    if content["benchmarks"]:
        bench = content["benchmarks"]
        drawn["benchmarks"] = [figures.benchmark_chart(task, models) for task in bench["tasks"]]
        drawn["breakdowns"] = [figures.breakdown_chart(b, models) for b in bench["breakdowns"]]
    if content["pairwise"]:
        drawn["pairwise"] = [_study_figures(n, study, models) for n, study in enumerate(content["pairwise"]["studies"])]
    if content["ladder"]:
        drawn["ladder"] = [figures.ladder_chart(f"ladder-{n}", ladder, models)
                           for n, ladder in enumerate(content["ladder"]["ladders"])]
    if content["agreement"]:
        published = content["agreement"]["published"]
        drawn["agreement"] = [figures.agreement_chart(f"agreement-{n}", e["among_raters"]["statistics"], published)
                              if e["among_raters"] else None for n, e in enumerate(content["agreement"]["entries"])]
    if content["safety"]:
        drawn["safety"] = _safety_figures(content["safety"], models)
    if content["cost"]:
        cost = content["cost"]
        has_latency = any(r["latency_p50_s"] is not None for r in cost["rows"])
        drawn["latency"] = figures.latency_chart("latency", cost["rows"], models) if has_latency else None
        drawn["cost"] = figures.cost_chart("cost", cost["models"], models)
    return drawn


def _study_figures(n: int, study: dict[str, Any], models: dict[str, Any]) -> dict[str, Any]:
    pairs = [{**pair, "label": models[pair["model_a"]]["label"]} for pair in study["pairs"]]
    categories = []
    for p, pair in enumerate(study["pairs"]):
        rows = [{**part, "label": part["name"], "model_a": pair["model_a"], "model_b": pair["model_b"]}
                for part in [*pair["by_category"], *pair["by_turns"]] if part["win"] is not None]
        if len(rows) > 2:  # beyond the single-/multi-turn split alone
            title = f"{models[pair['model_a']]['label']} vs {models[pair['model_b']]['label']} by category"
            categories.append(figures.pairwise_chart(f"pairwise-{n}-{p}", title, rows, models, versus=False,
                                                     width=figures.NARROW))
    has_bias = study["bias"]["first_shown"] or study["bias"]["longer"]
    usable = any(pair["win"] is not None for pair in pairs)
    return {"overview": figures.pairwise_chart(f"pairwise-{n}", f"Win / tie / loss ({study['rater']})", pairs, models)
            if usable else None,
            "categories": categories, "bias": figures.bias_chart(f"bias-{n}", study) if has_bias else None}


def _safety_figures(safety: dict[str, Any], models: dict[str, Any]) -> dict[str, Any]:
    drawn: dict[str, Any] = {"scatter": None, "categories": None}
    points = [p for p in safety["models"] if p["violation"] and p["false_refusal"]]
    if points:
        drawn["scatter"] = figures.safety_scatter("safety", points, models, safety["published"]["false_refusal_borderline"])
    rows = [{"group": c["category"], "model": c["model"], **c["violation"]} for c in safety["categories"]]
    if rows:
        drawn["categories"] = figures.category_chart("safety-categories", "Violations by risk category",
                                                     "violation rate (%), 95% CI", rows, models)
    return drawn


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


# ---- formatting for the templates --------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("llama2.evaluate.report", "templates"), undefined=StrictUndefined,
                      autoescape=lambda name: bool(name) and name.endswith(".html.j2"), trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(pct=pct, ci=ci, num=num, usd=usd, seconds=seconds, md=md_cell)
    env.globals.update(by_model=by_model, published_by_model=published_by_model)
    return env


def by_model(tasks: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any] | None]]]:
    """Benchmark rows regrouped as the paper's tables are: one row per model, one cell per task."""
    specs = list(dict.fromkeys(row["model"] for task in tasks for row in task["rows"]))
    cells = {(task["task"], row["model"]): row for task in tasks for row in task["rows"]}
    return [(spec, [cells.get((task["task"], spec)) for task in tasks]) for spec in specs]


def published_by_model(tasks: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any] | None]]]:
    """The published figures the same way, models in the paper's order of the first task that has them."""
    names = list(dict.fromkeys(p["model"] for task in tasks for p in task["published"]))
    cells = {(task["task"], p["model"]): p for task in tasks for p in task["published"]}
    return [(name, [cells.get((task["task"], name)) for task in tasks]) for name in names]


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage number ("35.9"), or an em dash when unknown."""
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def ci(rate: dict[str, Any] | None, scale: float = 100, digits: int = 1) -> str:
    """`[low, high]` of an interval dict, on the same scale as `pct` (scale 1 for coefficients)."""
    if not rate or rate.get("low") is None:
        return ""
    return f"[{rate['low'] * scale:.{digits}f}, {rate['high'] * scale:.{digits}f}]"


def num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.4f}" if 0 < abs(value) < 0.01 else f"${value:,.2f}"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def md_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
