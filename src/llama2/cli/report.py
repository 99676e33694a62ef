"""`llama2 report RESULTS... -o report.html`: the gap report, one page putting the models of the
given result folders side by side with the Llama 2 paper's published figures (also as Markdown and
JSON). The work is in `llama2.evaluate.report`; this module parses and prints."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUTPUT = Path("report.html")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="the gap report: one HTML page from evaluation results",
        description="One self-contained HTML page (plots inline, no script) from result folders of `llama2 eval "
                    "run`, `eval pairwise`, `eval ratings import` and `eval safety`: benchmark scores with CIs next "
                    "to the Llama 2 paper's published figures, win/tie/loss, a Bradley-Terry ladder, agreement, "
                    "safety, latency and cost. Sections appear for what the folders hold.")
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="result folders (or folders holding them): eval run --output, pairwise study, ratings "
                             "import, safety study")
    parser.add_argument("--output", "-o", default=None, help=f"HTML file to write (default ./{DEFAULT_OUTPUT})")
    parser.add_argument("--markdown", default=None, metavar="FILE", help="also write the tables as Markdown")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the report's numbers as JSON")
    parser.add_argument("--title", default=None, help="page title (default: 'The gap report')")
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from llama2.evaluate.report.content import DEFAULT_TITLE, SECTIONS, build_report
    from llama2.evaluate.report.render import write_report

    content = build_report(args.results, title=args.title or DEFAULT_TITLE)
    written = write_report(content, html=Path(args.output) if args.output else DEFAULT_OUTPUT,
                           markdown=Path(args.markdown) if args.markdown else None,
                           json_path=Path(args.json) if args.json else None)
    shown = [name for name in SECTIONS if content[name]]
    print(f"{len(content['inputs'])} result folder(s), {len(content['models'])} model(s); "
          f"sections: {', '.join(shown)}")
    for note in content["notes"]:
        print(f"  left out: {note}")
    for path in written:
        print(f"wrote {path}")
    return 0
