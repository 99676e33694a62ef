"""`llama2 eval reward`: a reward model's accuracy on preference pairs by preference strength (the
layout of Llama 2's Table 8, with bootstrap 95% intervals), its calibration (reliability table and
ECE) and, where replies carry safe labels, its unsafe-response recall at σ(r) = 0.5."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from llama2.cli.common import print_json

if TYPE_CHECKING:
    from llama2.evaluate.reward import Accuracy, RewardReport


def register(commands) -> None:
    """Adds `reward` to the `eval` group's subparsers."""
    parser = commands.add_parser(
        "reward", help="reward-model accuracy by preference strength (Table 8) and calibration",
        description="Score both replies of every preference pair with a reward model; report accuracy by "
                    "preference strength and overall with bootstrap 95%% intervals, a reliability table of "
                    "confidence σ(|r_c - r_r|) against accuracy with its ECE, and safety recall where labelled.")
    parser.add_argument("--model", "-m", required=True, metavar="PATH",
                        help="reward model folder (OUTPUT_DIR/model or a checkpoint of `llama2 train reward`)")
    parser.add_argument("--data", required=True, metavar="PAIRS.jsonl",
                        help="preference pairs (JSONL or Parquet; {prompt, chosen, rejected, strength, ...} or HH-RLHF)")
    parser.add_argument("--format", choices=("pair", "hh_rlhf"), default=None, help="record form (default: detected per record)")
    parser.add_argument("--batch-size", type=int, default=16, help="replies scored per forward pass (default 16)")
    parser.add_argument("--bins", type=int, default=10, help="calibration bins over confidence [0.5, 1] (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the checkpoint's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run_reward)


def run_reward(args: argparse.Namespace) -> int:
    from llama2.data.preference import read_preferences
    from llama2.evaluate.reward import reward_report, score_pairs
    from llama2.model.reward import RewardModel
    from llama2.progress import ProgressBar

    pairs = read_preferences(args.data, format=args.format)
    model = RewardModel.from_pretrained(args.model, dtype=args.dtype, device=args.device)
    with ProgressBar("scoring replies", 2 * len(pairs), unit="replies", enabled=not args.json, transient=True) as bar:
        chosen, rejected = score_pairs(model, pairs, batch_size=args.batch_size, progress=bar.advance)
    report = reward_report(pairs, chosen, rejected, bins=args.bins, seed=args.seed)
    if args.json:
        print_json({"model": args.model, "data": args.data, **report.to_dict()})
    else:
        _print_human(report, args.model)
    return 0


def _cell(accuracy: Accuracy) -> str:
    if accuracy.interval is None:
        return "—"
    i = accuracy.interval
    return f"{100 * i.estimate:.1f}\n[{100 * i.low:.1f}, {100 * i.high:.1f}]\nn={accuracy.n}"


def _print_human(report: RewardReport, model: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from llama2.evaluate.reward import STRENGTH_LABELS

    console = Console(highlight=False)
    table = Table(title="accuracy (%) by preference strength, bootstrap 95% CI")
    for header in ["model", *STRENGTH_LABELS.values(), "Avg"]:
        table.add_column(header, overflow="fold")
    table.add_row(model, *(_cell(report.by_strength[s]) for s in STRENGTH_LABELS), _cell(report.average))
    console.print(table)
    if report.by_category:
        categories = Table(title="accuracy (%) by category")
        for header in ("category", "accuracy", "95% CI", "pairs"):
            categories.add_column(header)
        for name, accuracy in report.by_category.items():
            i = accuracy.interval
            categories.add_row(name, f"{100 * i.estimate:.1f}", f"[{100 * i.low:.1f}, {100 * i.high:.1f}]", str(accuracy.n))
        console.print(categories)
    calibration = Table(title=f"calibration: confidence σ(|r_c - r_r|) vs accuracy; ECE {report.ece:.3f}")
    for header in ("confidence", "pairs", "mean confidence", "accuracy"):
        calibration.add_column(header)
    for b in report.calibration:
        calibration.add_row(f"[{b.low:.2f}, {b.high:.2f})", str(b.n), "—" if b.confidence is None else f"{b.confidence:.3f}",
                            "—" if b.accuracy is None else f"{b.accuracy:.3f}")
    console.print(calibration)
    for label, accuracy in (("unsafe replies scored below σ(r) = 0.5 (recall)", report.unsafe_recall),
                            ("safe replies scored at or above σ(r) = 0.5", report.safe_pass)):
        if accuracy is not None and accuracy.interval is not None:
            i = accuracy.interval
            console.print(f"{label}: {100 * i.estimate:.1f}% [{100 * i.low:.1f}, {100 * i.high:.1f}] of {accuracy.n}")
