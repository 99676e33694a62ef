"""The report's plots, drawn with matplotlib (its object API: no pyplot state, no backend switch) as
SVG to inline in the HTML page.

Each function takes part of the report's content dict and the model table (`palette.model_table`),
so one model has one colour everywhere; the paper's published figures are grey diamonds. Rates are
drawn in percent. A chart comes back as `{"title", "svg", "note", "wide"}`: the page sets the title
and note in its own type above and below the plot (the plots carry no titles), and lets wide plots
scroll sideways on a phone rather than shrink their text out of reach. `inline_svg` makes an
SVG safe to put many on one page: ids prefixed with the chart's name (matplotlib numbers them from 1
in every file), hash salt fixed (the same content gives the same bytes), metadata and the XML
prologue dropped, an accessible title added. An SVG keeps its natural size (points) and the page's
CSS lets it shrink on narrow screens."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html import escape
from typing import Any

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from llama2.evaluate.report.palette import PUBLISHED_COLOR

Chart = dict[str, Any]
Models = dict[str, dict[str, Any]]
INK, MUTED, GRID, TIE = "#1F2430", "#5B6472", "#E6E9EE", "#D5DAE1"
BAND, BAND_TEXT = "#FCE8C8", "#9A6A15"  # the paper's published range
WIDE, NARROW = 8.6, 5.2  # figure widths in inches: a full-width figure, a figure in a two-column grid
ROW = 0.34  # inches per row of a horizontal chart
STYLE = {
    "svg.fonttype": "none",  # text stays text: small files, selectable, drawn in the page's fonts
    "font.family": "sans-serif",
    "font.size": 9.5,
    "axes.edgecolor": "#C3C9D2",
    "axes.labelcolor": MUTED,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": INK,
    "xtick.major.size": 0,
    "ytick.major.size": 0,
    "legend.frameon": False,
    "figure.facecolor": "white",
}


def benchmark_chart(task: dict[str, Any], models: Models) -> Chart:
    """One task: each model's score with its CI, and the paper's published figures, best on top."""
    rows = [(models[r["model"]]["label"], r["estimate"], r["low"], r["high"], models[r["model"]]["color"], False)
            for r in task["rows"] if r["estimate"] is not None]
    rows += [(f"{p['model']} ({p['source']})", p["value"], None, None, PUBLISHED_COLOR, True)
             for p in task["published"]]
    rows.sort(key=lambda row: row[1])
    with _figure(f"bench-{task['task']}", NARROW, _height(len(rows))) as (fig, ax):
        for y, (_, value, low, high, color, published) in enumerate(rows):
            if published:
                ax.plot([_pct(value)], [y], marker="D", ms=5.5, mfc="white", mec=color, mew=1.4, ls="none")
            else:
                _dot(ax, y, value, low, high, color)
        _y_labels(ax, [row[0] for row in rows], [row[4] if not row[5] else MUTED for row in rows],
                  bold=[not row[5] for row in rows])
        _percent_axis(ax, [row[1] for row in rows] + [row[3] for row in rows if row[3] is not None])
        ax.set_xlabel(f"{task['metric']}, %")
        note = "● measured, with 95% CI" + (" · ◇ published in the paper (grey)" if task["published"] else "")
        return _save(fig, task["title"], note)


def breakdown_chart(breakdown: dict[str, Any], models: Models) -> Chart:
    """Per category (or group) of one task, every model's score with its CI, models side by side."""
    return category_chart(f"breakdown-{breakdown['task']}", f"{breakdown['title']} by {breakdown['by']}",
                          f"{breakdown['metric']}, % (95% CI)", breakdown["rows"], models, groups=breakdown["groups"])


def category_chart(name: str, title: str, xlabel: str, rows: Sequence[dict[str, Any]], models: Models,
                   groups: Sequence[str] | None = None) -> Chart:
    """Rates per group and model (`{"group", "model", "estimate", "low", "high"}`), models side by
    side within each group, groups top to bottom in the order given (default: first seen)."""
    groups = list(groups or dict.fromkeys(r["group"] for r in rows))
    specs = list(dict.fromkeys(r["model"] for r in rows))
    band = 0.7 / max(1, len(specs))
    by_key = {(r["group"], r["model"]): r for r in rows}
    with _figure(name, WIDE, _height(len(groups) * max(1.0, 0.45 * len(specs)), extra=0.3)) as (fig, ax):
        for g, group in enumerate(reversed(groups)):
            for m, spec in enumerate(specs):
                row = by_key.get((group, spec))
                if row is not None:
                    _dot(ax, g + ((len(specs) - 1) / 2 - m) * band, row["estimate"], row["low"], row["high"],
                         models[spec]["color"], size=5.5)
        _y_labels(ax, [group.replace("_", " ") for group in reversed(groups)], [INK] * len(groups))
        _percent_axis(ax, [r["high"] for r in rows])
        ax.set_xlabel(xlabel)
        _legend(ax, specs, models)
        return _save(fig, title)


def pairwise_chart(name: str, title: str, rows: Sequence[dict[str, Any]], models: Models, *,
                   versus: bool = True, width: float = WIDE) -> Chart:
    """Stacked win/tie/loss bars, one per row (`{"label", "model_a", "model_b", "win", "tie", "loss"}`):
    the first model's wins in its colour, ties grey, its losses in the other model's colour; the win
    edge carries the win rate's CI (above the bar), the loss edge the loss rate's (below). `versus`:
    rows are pairs (the first model named left in its colour, the second right), else rows are parts
    of one pair (categories)."""
    rows = [row for row in rows if row["win"] is not None]
    with _figure(name, width, _height(len(rows), extra=0.25)) as (fig, ax):
        for y, row in enumerate(reversed(rows)):
            _stacked(ax, y, row, (models[row["model_a"]]["color"], TIE, models[row["model_b"]]["color"]))
            if versus:
                ax.annotate(f"vs {models[row['model_b']]['label']}", (100, y), xytext=(6, 0),
                            textcoords="offset points", va="center", fontsize=9, weight="bold",
                            color=models[row["model_b"]]["color"], annotation_clip=False)
        labels = [row["label"] for row in reversed(rows)]
        _y_labels(ax, labels, [models[row["model_a"]]["color"] if versus else INK for row in reversed(rows)],
                  bold=[versus] * len(rows))
        _bar_axes(ax, "% of comparisons: first model wins · ties · loses" if versus else "% won · tied · lost")
        return _save(fig, title, "Whiskers: 95% bootstrap CIs of the win rate (above) and the loss rate (below)."
                     if versus else "")


def bias_chart(name: str, study: dict[str, Any]) -> Chart:
    """The judge's (or raters') position and length bias: win/tie/loss of the answer shown first,
    and of the longer answer; an unbiased rater sits on the 50% line."""
    bias = study["bias"]
    rows = [(f"answer shown first (n={bias['first_shown']['n']})", bias["first_shown"])] if bias["first_shown"] else []
    if bias["longer"]:
        rows.append((f"longer answer (n={bias['longer']['n']})", bias["longer"]))
    with _figure(name, WIDE, _height(len(rows), extra=0.25)) as (fig, ax):
        for y, (_, rates) in enumerate(reversed(rows)):
            _stacked(ax, y, rates, ("#3D4A5C", TIE, "#A7B3C4"))
        _y_labels(ax, [label for label, _ in reversed(rows)], [INK] * len(rows))
        ax.axvline(50, color=INK, lw=0.9, ls=(0, (3, 3)))
        _bar_axes(ax, "% of verdicts: won · tied · lost")
        return _save(fig, f"Bias of {study['rater']}", "Dashed line: no bias (as many wins as losses). "
                     "Whiskers: 95% bootstrap CIs.")


def ladder_chart(name: str, ladder: dict[str, Any], models: Models) -> Chart:
    """Bradley-Terry ratings with bootstrap CIs, best on top; the dashed line is the mean model."""
    ratings = list(reversed(ladder["ratings"]))
    with _figure(name, WIDE, _height(len(ratings))) as (fig, ax):
        for y, r in enumerate(ratings):
            color = models[r["model"]]["color"]
            if r["low"] is not None:
                ax.plot([r["low"], r["high"]], [y, y], color=color, lw=2.4, solid_capstyle="round", alpha=0.5)
            ax.plot([r["rating"]], [y], "o", color=color, ms=7.5, mec="white", mew=1.2)
            ax.annotate(f"{r['rating']:.0f}", (r["high"] if r["high"] is not None else r["rating"], y),
                        xytext=(7, 0), textcoords="offset points", va="center", fontsize=9, color=color,
                        weight="bold")
        ax.axvline(ladder["base"], color=MUTED, lw=0.8, ls=(0, (3, 3)))
        _y_labels(ax, [models[r["model"]]["label"] for r in ratings], [models[r["model"]]["color"] for r in ratings],
                  bold=[True] * len(ratings))
        lows = [r["low"] if r["low"] is not None else r["rating"] for r in ratings]
        highs = [r["high"] if r["high"] is not None else r["rating"] for r in ratings]
        pad = max(20.0, (max(highs) - min(lows)) * 0.1)
        ax.set_xlim(min(lows) - pad, max(highs) + 2 * pad)
        ax.set_xlabel("Bradley-Terry rating (Elo scale)")
        return _save(fig, f"Ladder from {ladder['rater']} ({ladder['n_votes']} votes)",
                     f"Lines: {ladder['confidence']:.0%} bootstrap CIs. Dashed: the mean model (1000).")


def agreement_chart(name: str, statistics: Sequence[dict[str, Any]], published: Sequence[dict[str, Any]]) -> Chart:
    """Agreement coefficients with CIs, next to the band of the paper's helpfulness AC2."""
    rows = list(reversed(statistics))
    with _figure(name, WIDE, _height(len(rows), extra=0.15)) as (fig, ax):
        helpful = published[0]
        ax.axvspan(helpful["low"], helpful["high"], color=BAND, lw=0, zorder=0)
        ax.annotate(f"paper's AC2 ({helpful['study']})", (helpful["high"], 1.0), xytext=(4, -2),
                    textcoords="offset points", va="top", fontsize=8.5, color=BAND_TEXT,
                    xycoords=("data", "axes fraction"))
        for y, s in enumerate(rows):
            ax.plot([s["low"], s["high"]], [y, y], color="#2F5D8A", lw=2.4, solid_capstyle="round", alpha=0.45)
            ax.plot([s["estimate"]], [y], "o", color="#2F5D8A", ms=7, mec="white", mew=1.2)
        _y_labels(ax, [_coefficient(s) for s in rows], [INK] * len(rows))
        ax.axvline(0, color=MUTED, lw=0.8)
        ax.set_xlim(max(-1.05, min(-0.1, min(s["low"] for s in rows) - 0.05)), 1.05)
        ax.set_ylim(-0.6, len(rows) - 0.1)
        ax.set_xlabel("coefficient: 1 = perfect agreement, 0 = chance")
        return _save(fig, "Agreement among raters", "Lines: 95% intervals. Shaded: the AC2 range the paper reports "
                     "for its helpfulness study.")


def safety_scatter(name: str, points: Sequence[dict[str, Any]], models: Models,
                   published: dict[str, Any] | None) -> Chart:
    """Violation rate against false-refusal rate per model, each with both CIs; lower left is better."""
    with _figure(name, WIDE * 0.85, 4.4) as (fig, ax):
        if published:
            ax.axvspan(_pct(published["low"]), _pct(published["high"]), color=BAND, lw=0, zorder=0)
            ax.annotate("paper: borderline false refusals", (_pct(published["low"]), 1.0), xytext=(4, -2),
                        textcoords="offset points", va="top", fontsize=8.5, color=BAND_TEXT,
                        xycoords=("data", "axes fraction"))
        for p in points:
            x, y, color = p["false_refusal"], p["violation"], models[p["model"]]["color"]
            ax.plot([_pct(x["low"]), _pct(x["high"])], [_pct(y["estimate"])] * 2, color=color, lw=2.2, alpha=0.45,
                    solid_capstyle="round")
            ax.plot([_pct(x["estimate"])] * 2, [_pct(y["low"]), _pct(y["high"])], color=color, lw=2.2, alpha=0.45,
                    solid_capstyle="round")
            ax.plot([_pct(x["estimate"])], [_pct(y["estimate"])], "o", color=color, ms=9, mec="white", mew=1.4,
                    zorder=3)
            left = x["estimate"] > 0.75  # keep the name inside the plot near the right edge
            ax.annotate(models[p["model"]]["label"], (_pct(x["estimate"]), _pct(y["estimate"])),
                        xytext=(-8 if left else 8, 6), textcoords="offset points", ha="right" if left else "left",
                        fontsize=9.5, color=color, weight="bold")
        top = max([_pct(p["violation"]["high"]) for p in points] + [10.0])
        right = max([_pct(p["false_refusal"]["high"]) for p in points] + [_pct(published["high"]) if published else 10.0])
        ax.set_xlim(-2, min(102, right * 1.12 + 2))
        ax.set_ylim(-2, min(102, top * 1.15 + 2))
        ax.set_xlabel("false refusals on borderline prompts, %")
        ax.set_ylabel("violations on adversarial prompts, %")
        return _save(fig, "Violations against false refusals", "Lower left is better: safe without refusing "
                     "harmless requests. Lines: 95% CIs.")


def latency_chart(name: str, rows: Sequence[dict[str, Any]], models: Models) -> Chart:
    """Median generation latency per model and source, the line reaching to the 95th percentile."""
    rows = [r for r in rows if r["latency_p50_s"] is not None]
    with _figure(name, WIDE, _height(len(rows))) as (fig, ax):
        for y, r in enumerate(reversed(rows)):
            color = models[r["model"]]["color"]
            if r["latency_p95_s"] is not None:
                ax.plot([r["latency_p50_s"], r["latency_p95_s"]], [y, y], color=color, lw=2.4, alpha=0.5,
                        solid_capstyle="round")
            ax.plot([r["latency_p50_s"]], [y], "o", color=color, ms=7, mec="white", mew=1.2)
        _y_labels(ax, [f"{models[r['model']]['label']} · {r['source']}" for r in reversed(rows)],
                  [models[r["model"]]["color"] for r in reversed(rows)])
        values = [v for r in rows for v in (r["latency_p50_s"], r["latency_p95_s"]) if v]
        if values and max(values) / min(values) > 50:
            ax.set_xscale("log")
        else:
            top = max(values + [1e-3])
            ax.set_xlim(-top * 0.015, top * 1.1)
        ax.set_xlabel("seconds per answer")
        return _save(fig, "Latency per answer", "Dots: median; lines reach to the 95th percentile.")


def cost_chart(name: str, totals: Sequence[dict[str, Any]], models: Models) -> Chart:
    """Dollars per 1,000 answers per model; local models at $0 and unknown prices said in words."""
    totals = list(reversed(totals))
    with _figure(name, WIDE, _height(len(totals))) as (fig, ax):
        known = [t["cost_per_1k"] for t in totals if t["cost_per_1k"]]
        for y, t in enumerate(totals):
            cost = t["cost_per_1k"]
            if cost:
                ax.barh([y], [cost], height=0.55, color=models[t["model"]]["color"])
            text = "local: $0 in API fees" if t["local"] else "no price known" if cost is None else f"${cost:,.2f}"
            ax.annotate(text, (cost or 0, y), xytext=(5, 0), textcoords="offset points", va="center", fontsize=9,
                        color=MUTED)
        _y_labels(ax, [models[t["model"]]["label"] for t in totals], [models[t["model"]]["color"] for t in totals])
        ax.set_xlim(0, (max(known) if known else 1.0) * 1.3)
        if known:
            ax.set_xlabel("US$ per 1,000 answers")
        else:  # nothing priced: an axis of dollars would only draw zeros
            ax.set_xticks([])
            ax.grid(False)
        return _save(fig, "Cost per 1,000 answers", "All sources of each model together.")


# ---- drawing helpers -------------------------------------------------------------------------


@contextmanager
def _figure(name: str, width: float, height: float) -> Iterator[tuple[Figure, Axes]]:
    with mpl.rc_context(STYLE | {"svg.hashsalt": name}):
        fig = Figure(figsize=(width, height), layout="constrained")
        fig.set_label(name)
        yield fig, fig.subplots()


def _save(fig: Figure, title: str, note: str = "") -> Chart:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return {"title": title, "svg": inline_svg(buffer.getvalue(), fig.get_label(), title), "note": note,
            "wide": fig.get_figwidth() > NARROW}


def inline_svg(text: str, name: str, title: str) -> str:
    """An SVG file's text made fit to inline in a page with others (see the module docstring)."""
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", name)
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{escape(title)}" ', 1).replace(
        ">", f"><title>{escape(title)}</title>", 1)


def _height(rows: float, extra: float = 0.0) -> float:
    return 0.75 + extra + ROW * max(rows, 1)


def _pct(value: float) -> float:
    return 100 * value


def _dot(ax: Axes, y: float, value: float, low: float | None, high: float | None, color: str,
         size: float = 7.5) -> None:
    if low is not None and high is not None:
        ax.plot([_pct(low), _pct(high)], [y, y], color=color, lw=2.4, solid_capstyle="round", alpha=0.5)
    ax.plot([_pct(value)], [y], "o", color=color, ms=size, mec="white", mew=1.1)


def _y_labels(ax: Axes, labels: Sequence[str], colors: Sequence[str], bold: Sequence[bool] | None = None) -> None:
    ax.set_yticks(range(len(labels)), labels)
    for tick, color, heavy in zip(ax.get_yticklabels(), colors, bold or [False] * len(labels)):
        tick.set_color(color)
        if heavy:
            tick.set_fontweight("bold")
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.grid(axis="y", visible=False)


def _percent_axis(ax: Axes, fractions: Sequence[float]) -> None:
    top = max([f for f in fractions if f is not None] + [0.0])
    right = 100 if top > 0.55 else max(10, math.ceil(_pct(top) * 1.2 / 10) * 10)
    ax.set_xlim(-right * 0.015, right * 1.015)  # a rate of 0 or 100% stays in view, off the axis line


def _stacked(ax: Axes, y: float, rates: dict[str, Any], colors: tuple[str, str, str]) -> None:
    """One win/tie/loss bar at `y` with the win and loss CIs as whiskers on its top and bottom edges."""
    left = 0.0
    for outcome, color in zip(("win", "tie", "loss"), colors):
        width = _pct(rates[outcome]["estimate"])
        ax.barh([y], [width], left=left, height=0.56, color=color, edgecolor="white", linewidth=1)
        if width >= 7:
            ax.text(left + width / 2, y, f"{width:.0f}%", ha="center", va="center", fontsize=8.5,
                    color=INK if color == TIE else "white", weight="bold")
        left += width
    win, loss = rates["win"], rates["loss"]
    edges = ((win["estimate"], win["low"], win["high"], y + 0.28),
             (1 - loss["estimate"], 1 - loss["high"], 1 - loss["low"], y - 0.28))
    for edge, low, high, at in edges:
        if high - low > 1e-9:
            ax.errorbar([_pct(edge)], [at], xerr=[[_pct(edge - low)], [_pct(high - edge)]], fmt="none",
                        ecolor=INK, elinewidth=1, capsize=2.5, capthick=1)


def _bar_axes(ax: Axes, xlabel: str) -> None:
    ax.set_xlim(0, 100)
    ax.grid(False)
    ax.spines["left"].set_visible(False)
    ax.set_xlabel(xlabel)


def _legend(ax: Axes, specs: Sequence[str], models: Models) -> None:
    handles = [ax.plot([], [], "o", color=models[s]["color"], ms=6.5, label=models[s]["label"])[0] for s in specs]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.01), ncols=min(4, len(specs)),
              fontsize=9, handletextpad=0.3, borderaxespad=0, columnspacing=1.4)


def _coefficient(s: dict[str, Any]) -> str:
    weights = "" if s["weights"] in ("identity", "unweighted") else f" ({s['weights']})"
    return f"{s['statistic']}{weights}"
