"""The gap report (`llama2 report`): one page that puts open and closed models side by side from
the result folders the evaluation commands write, with the Llama 2 paper's published figures next to
them for reference.

Pipeline, one module per step: `loading` finds and reads the folders given (each kind detected from
its files), `content` turns them into one JSON-ready dict (the numbers every output shows),
`figures` draws that dict as inline SVG with matplotlib, `render` writes it as a self-contained HTML
page, Markdown and JSON. `published` holds the paper's figures with the table or figure each comes
from. `build_report` runs the steps up to the content; `write_report` renders and writes."""

from llama2.evaluate.report.content import build_report
from llama2.evaluate.report.render import write_report

__all__ = ["build_report", "write_report"]
