"""The usage page's chart — tokens per day, stacked by model — drawn on the server as inline SVG: no
script, no style attribute (the Content-Security-Policy allows neither), colours from classes in
app.css so both themes apply. The bars stretch to the page's width; the axis labels are HTML beside
them, so text never stretches with the bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

MAX_SERIES = 5  # models drawn apart; the rest are summed as "other models"
BAR_SLOT = 10  # viewBox units per day
BAR_WIDTH = 7
HEIGHT = 100


@dataclass(frozen=True)
class Chart:
    svg: Markup
    y_labels: list[str]  # top, middle, bottom
    x_labels: list[str]  # first, middle, last day
    legend: list[tuple[int, str]]  # (colour index, model)
    empty: bool


def daily_tokens_chart(days: list[date], series: dict[str, list[int]]) -> Chart:
    """The chart of `series` (model -> tokens per day, aligned with `days`)."""
    ranked = sorted(series, key=lambda model: (-sum(series[model]), model))
    shown = ranked[:MAX_SERIES]
    stacks = {model: series[model] for model in shown}
    if len(ranked) > MAX_SERIES:
        stacks["other models"] = [sum(series[m][i] for m in ranked[MAX_SERIES:]) for i in range(len(days))]
    totals = [sum(values[i] for values in stacks.values()) for i in range(len(days))]
    top = nice_ceiling(max(totals, default=0))
    bars = []
    for i, day in enumerate(days):
        y = float(HEIGHT)
        for colour, (model, values) in enumerate(stacks.items()):
            if not values[i]:
                continue
            height = values[i] / top * HEIGHT
            y -= height
            label = f"{_day(day)}: {model}, {values[i]:,} tokens"
            bars.append(f'<rect class="series-{colour}" x="{i * BAR_SLOT + (BAR_SLOT - BAR_WIDTH) / 2:g}" '
                        f'y="{y:.3f}" width="{BAR_WIDTH}" height="{height:.3f}" data-day="{day.isoformat()}" '
                        f'data-model="{escape(model)}" data-tokens="{values[i]}"><title>{escape(label)}</title></rect>')
    width = max(1, len(days)) * BAR_SLOT
    grid = "".join(f'<line class="grid" x1="0" x2="{width}" y1="{y}" y2="{y}" vector-effect="non-scaling-stroke"/>'
                   for y in (0, HEIGHT / 2, HEIGHT))
    summary = f"Tokens per day from {_day(days[0])} to {_day(days[-1])}" if days else "Tokens per day"
    svg = Markup(f'<svg class="chart-bars" viewBox="0 0 {width} {HEIGHT}" preserveAspectRatio="none" role="img" '
                 f'aria-label="{escape(summary)}">{grid}{"".join(bars)}</svg>')
    x_labels = [_day(d) for d in (days[0], days[len(days) // 2], days[-1])] if days else []
    return Chart(svg, [short_number(top), short_number(top / 2), "0"], x_labels,
                 list(enumerate(stacks)), not any(totals))


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= value (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def short_number(value: float) -> str:
    """1234 -> 1.2k, 2500000 -> 2.5M; small numbers as they are."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _day(day: date) -> str:
    return f"{day:%b} {day.day}"
