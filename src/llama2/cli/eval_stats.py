"""`llama2 eval agreement` and `llama2 eval ladder`: inter-rater reliability of a ratings file and
a Bradley-Terry ladder from a votes file, each with confidence intervals (text table, or --json)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from llama2.cli.common import print_json

if TYPE_CHECKING:
    from llama2.evaluate.agreement import AgreementReport
    from llama2.evaluate.ladder import Ladder

MATRIX_MAX_MODELS = 8  # the predicted win-probability matrix is printed for ladders up to this size


def register(commands) -> None:
    """Adds the two commands to the `eval` group's subparsers."""
    agreement = commands.add_parser(
        "agreement", help="inter-rater reliability of ratings (Gwet's AC1/AC2, Krippendorff's alpha, kappas)",
        description="Agreement among raters, with confidence intervals, from a long-format file: one row per "
                    "item, rater and rating (CSV/TSV with a header item,rater,rating, or JSONL).")
    agreement.add_argument("ratings", metavar="RATINGS", help="ratings file: .csv, .tsv or .jsonl")
    agreement.add_argument("--categories", default=None,
                           help="every possible rating, in order, comma-separated (e.g. 1,2,3,4,5,6,7): unused ones "
                                "still count, and text labels get an order (default: the ratings seen, sorted)")
    agreement.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    agreement.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    agreement.add_argument("--json", action="store_true", help="print the coefficients as JSON")
    agreement.set_defaults(func=run_agreement)

    ladder = commands.add_parser(
        "ladder", help="Bradley-Terry ratings of many models from pairwise votes",
        description="Bradley-Terry ratings on an Elo-like scale (400 * log10 strength; the mean model, or --anchor, "
                    "at 1000) with bootstrap intervals, from votes: CSV/TSV with a header model_a,model_b,winner "
                    "(winner a, b or tie; a tie counts half a win each way), or JSONL.")
    ladder.add_argument("votes", metavar="VOTES", help="votes file: .csv, .tsv or .jsonl")
    ladder.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples of the votes for the intervals (0: none)")
    ladder.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    ladder.add_argument("--anchor", default=None, metavar="MODEL", help="model fixed at 1000 (default: the mean)")
    ladder.add_argument("--prior", type=float, default=None,
                        help="weight of the Gaussian prior on log-strengths (default 0.01; 0: plain MLE)")
    ladder.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    ladder.add_argument("--json", action="store_true", help="print the ladder as JSON")
    ladder.set_defaults(func=run_ladder)


def run_agreement(args: argparse.Namespace) -> int:
    from llama2.errors import ConfigError
    from llama2.evaluate.agreement import agreement_report, read_ratings

    categories = None
    if args.categories is not None:
        categories = [label.strip() for label in args.categories.split(",") if label.strip()]
        if len(categories) < 2:
            raise ConfigError("--categories: list at least two ratings, in order, e.g. --categories 1,2,3,4,5")
    report = agreement_report(read_ratings(args.ratings), categories=categories, confidence=args.confidence,
                              seed=args.seed)
    if args.json:
        print_json(report.to_dict())
    else:
        _print_agreement(report)
    return 0


def run_ladder(args: argparse.Namespace) -> int:
    from llama2.evaluate.ladder import PRIOR, bradley_terry, read_votes

    ladder = bradley_terry(read_votes(args.votes), n_bootstrap=args.bootstrap, seed=args.seed,
                           confidence=args.confidence, anchor=args.anchor,
                           prior=PRIOR if args.prior is None else args.prior)
    if args.json:
        print_json(ladder.to_dict())
    else:
        _print_ladder(ladder)
    return 0


def _print_agreement(report: AgreementReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    scale = ", ".join(f"{c:g}" if isinstance(c, float) else str(c) for c in report.categories)
    console.print(f"{report.n_items} items, {len(report.raters)} raters, {report.n_ratings} ratings; "
                  f"categories: {scale}")
    percent = f"{round(100 * report.statistics[0].interval.confidence):d}%"
    table = Table(title=f"agreement with {percent} confidence intervals")
    for header in ("coefficient", "weights", "estimate", f"{percent} CI", "interval by"):
        table.add_column(header, justify="right" if header == "estimate" else "left", no_wrap=True)
    for stat in report.statistics:
        table.add_row(stat.statistic, stat.weights, f"{stat.estimate:.3f}",
                      f"[{stat.interval.low:.3f}, {stat.interval.high:.3f}]", stat.ci_method.split()[0])
    console.print(table)
    console.print("analytic: Gwet's standard error, t with n-1 df; bootstrap: percentile, over items")
    for note in report.notes:
        console.print(f"note: {note}")


def _print_ladder(ladder: Ladder) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    percent = f"{round(100 * ladder.confidence):d}%"
    where = f"{ladder.anchor} = 1000" if ladder.anchor else "mean model = 1000"
    intervals = (f"{percent} CI from {ladder.n_bootstrap} bootstrap resamples of the votes" if ladder.n_bootstrap
                 else "no intervals (--bootstrap 0)")
    table = Table(title="Bradley-Terry ladder", caption=f"{ladder.n_votes} votes; {where}; {intervals}")
    for header in ("#", "model", "rating", f"{percent} CI", "games", "won-tied-lost"):
        table.add_column(header, justify="left" if header == "model" else "right", overflow="fold")
    for rank, rating in enumerate(ladder.ratings, start=1):
        interval = f"[{rating.low:.0f}, {rating.high:.0f}]" if rating.low is not None else "—"
        table.add_row(str(rank), rating.model, f"{rating.rating:.0f}", interval, str(rating.games),
                      f"{rating.wins}-{rating.ties}-{rating.losses}")
    console.print(table)
    if len(ladder.ratings) <= MATRIX_MAX_MODELS:
        matrix = Table(title="predicted chance that the row model is preferred to the column model")
        matrix.add_column("")
        for rank in range(1, len(ladder.ratings) + 1):
            matrix.add_column(f"#{rank}", justify="right")
        for rank, (rating, row) in enumerate(zip(ladder.ratings, ladder.win_matrix()), start=1):
            matrix.add_row(f"#{rank} {rating.model}", *("—" if other is rating else f"{p:.2f}"
                                                       for p, other in zip(row, ladder.ratings)))
        console.print(matrix)
