"""`llama2 eval pairwise` (answers from several models judged in pairs by an LLM) and `llama2 eval
ratings export|import|summary` (the same study rated by people). The work is in
`llama2.evaluate.pairwise` and `llama2.evaluate.ratings`; this module parses and prints."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from llama2.cli.common import print_json
from llama2.cli.study_options import add_study_options, study_settings

DEFAULT_OUTPUT = Path("pairwise-results")


def register(commands) -> None:
    """Add `pairwise` and `ratings` to the `eval` command group."""
    _register_pairwise(commands)
    _register_ratings(commands)


def _register_pairwise(commands) -> None:
    p = commands.add_parser(
        "pairwise", help="compare models pair by pair with an LLM judge (win/tie/loss)",
        description="Generate answers from two or more models on a prompt set, judge every pair in both orders "
                    "with an LLM judge, and report win/tie/loss with bootstrap 95%% CIs, the judge's position and "
                    "length bias, per category. Requests are cached: rerunning a killed study resumes it.")
    p.add_argument("--model", "-m", action="append", required=True, metavar="SPEC",
                   help="model spec, two or more: local:default-chat, local:/path, openai:gpt-4o, azure:DEPLOYMENT, "
                        "anthropic:..., http://host:port/v1#model")
    p.add_argument("--judge", metavar="SPEC", default=None,
                   help="the judge's model spec (any provider); without it only the answers are generated, "
                        "for human raters (`llama2 eval ratings export`)")
    p.add_argument("--prompts", default="starter",
                   help="prompt set: a JSONL file ({id, prompt|messages, category}) or 'starter', the bundled set (default)")
    p.add_argument("--mode", choices=("likert7", "wtl"), default="likert7",
                   help="the judge's scale: likert7 (1 = A much better .. 4 = same .. 7 = B much better) or wtl (A, B or tie)")
    p.add_argument("--judge-prompt", metavar="FILE", default=None,
                   help="judge prompt template with {conversation}, {question}, {answer_a}, {answer_b} "
                        "(default: the bundled template for --mode)")
    p.add_argument("--output", "-o", default=None, help=f"study folder (default ./{DEFAULT_OUTPUT})")
    add_study_options(p, limit_help="use only the first N prompts",
                      system_prompt_help="use Meta's launch system prompt, as the paper's human evaluation did")
    p.set_defaults(func=run_pairwise)


def _register_ratings(commands) -> None:
    r = commands.add_parser("ratings", help="human ratings of pairwise comparisons: export tasks, import, summarize",
                            description="Export blinded rating tasks from a pairwise study, import the ratings, and "
                                        "compute the same win/tie/loss tables as from a judge.")
    sub = r.add_subparsers(dest="ratings_command", metavar="COMMAND", required=True)
    export = sub.add_parser("export", help="write blinded rating tasks (random A/B order) and their key",
                            description="Write OUT/tasks.csv for annotators (random order, random A/B, no model "
                                        "names), OUT/key.csv to unblind and OUT/INSTRUCTIONS.md.")
    export.add_argument("study", help="a pairwise study folder (`llama2 eval pairwise --output DIR`)")
    export.add_argument("--output", "-o", required=True, help="new folder for tasks, key and instructions")
    export.add_argument("--scale", choices=("likert7", "wtl"), default="likert7", help="the scale annotators use")
    export.add_argument("--seed", type=int, default=0, help="seed of the task order and A/B draws (default 0)")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.set_defaults(func=run_export)

    imp = sub.add_parser("import", help="read ratings (CSV/JSONL) and write the tables",
                         description="Read ratings — annotators' task files with --key, or unblinded rows "
                                     "(rater,prompt_id,model_a,model_b,rating) — and write OUT/ratings.jsonl, "
                                     "summary.json, votes.csv and agreement.csv.")
    imp.add_argument("files", nargs="+", help="ratings files (.csv, .tsv or .jsonl)")
    imp.add_argument("--key", default=None, help="the key.csv written by `export` (for blinded task files)")
    imp.add_argument("--scale", choices=("likert7", "wtl"), default="likert7", help="the ratings' scale")
    imp.add_argument("--rater", default=None, help="rater name for rows whose rater cell is empty")
    imp.add_argument("--output", "-o", required=True, help="folder for the imported ratings and tables")
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    imp.set_defaults(func=run_import)

    summary = sub.add_parser("summary", help="print the tables of imported ratings, and agreement with a judge",
                             description="Print win/tie/loss per pair of models from an imported ratings folder; "
                                         "with --judge, the judge's agreement with the humans.")
    summary.add_argument("ratings", help="a folder written by `llama2 eval ratings import`")
    summary.add_argument("--judge", metavar="STUDY", default=None,
                         help="a judged pairwise study of the same prompts: report judge-vs-human agreement")
    summary.add_argument("--json", action="store_true", help="print the summary as JSON")
    summary.set_defaults(func=run_summary)


def run_pairwise(args: argparse.Namespace) -> int:
    from llama2.errors import ConfigError
    from llama2.evaluate.judge import load_template
    from llama2.evaluate.pairwise import PairwiseConfig, run_pairwise as run
    from llama2.evaluate.prompts import load_prompts

    if args.judge is None and args.judge_prompt is not None:
        raise ConfigError("--judge-prompt needs --judge SPEC: without a judge only answers are generated")
    settings = study_settings(args)
    template = load_template(args.judge_prompt, args.mode) if args.judge else None
    items = load_prompts(args.prompts, limit=args.limit)
    config = PairwiseConfig(
        models=args.model, judge=args.judge, scale=args.mode, template=template,
        answer_params=settings.answer_params, judge_params=settings.judge_params, system_prompt=settings.system_prompt,
        concurrency=args.concurrency, batch_size=args.batch_size, prompts_source=str(args.prompts),
        settings={"limit": args.limit})
    output = Path(args.output) if args.output else DEFAULT_OUTPUT
    summary = asyncio.run(run(config, items, output=output, cache_path=settings.cache, progress=True))
    if args.json:
        print_json(summary)
        return 0
    _print_answers(summary)
    if summary["judge"] is not None:
        judge = summary["judge"]
        print(f"judge {judge['spec']} ({judge['scale']}, {judge['template']}): {judge['requests']['unique']} requests, "
              f"{judge['requests']['cached']} cached, {judge['failed']} comparison(s) failed")
        print_tables(summary)
    print(f"study in {output}/ (answers.jsonl, judgments.jsonl, summary.json, votes.csv)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from llama2.evaluate.ratings import export_tasks

    out = Path(args.output)
    count = export_tasks(Path(args.study), out, scale=args.scale, seed=args.seed, fmt=args.format)
    print(f"{count} rating tasks in {out / f'tasks.{args.format}'}; the key to unblind them is "
          f"{out / f'key.{args.format}'} (keep it from the annotators)")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from llama2.evaluate.ratings import import_ratings, write_ratings

    imported = import_ratings(args.files, scale=args.scale, key=args.key, rater=args.rater)
    summary = write_ratings(Path(args.output), imported, args.scale)
    if args.json:
        print_json(summary)
        return 0
    _print_ratings_header(summary)
    print_tables(summary)
    print(f"ratings in {args.output}/ (ratings.jsonl, summary.json, votes.csv, agreement.csv)")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from llama2.evaluate.ratings import judge_agreement, read_ratings_folder

    summary, imported = read_ratings_folder(Path(args.ratings))
    if args.json:
        agreement = judge_agreement(imported, summary["scale"], Path(args.judge)).to_dict() if args.judge else None
        print_json({**summary, "judge_agreement": agreement})
        return 0
    _print_ratings_header(summary)
    print_tables(summary)
    if args.judge:  # after the tables: agreement can be undefined (say, every rating the same)
        _print_agreement(judge_agreement(imported, summary["scale"], Path(args.judge)).to_dict())
    return 0


def _print_answers(summary: dict[str, Any]) -> None:
    for model, answers in summary["answers"].items():
        words = "—" if answers["mean_words"] is None else f"{answers['mean_words']:.0f}"
        print(f"{model}: {answers['answered']} answers ({answers['failed']} failed), {words} words on average, "
              f"{answers['requests']['cached']}/{answers['requests']['unique']} cached")


def _print_ratings_header(summary: dict[str, Any]) -> None:
    print(f"{summary['ratings']} ratings ({summary['scale']}) by {len(summary['raters'])} rater(s) on "
          f"{summary['items']} items; {summary['blank']} left blank; raters combined by {summary['consensus']}")


def print_tables(summary: dict[str, Any]) -> None:
    """Win/tie/loss per pair with CIs; the position and length biases; the per-category breakdown."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not summary["pairs"]:
        return
    results = Table(title="win / tie / loss of model A against model B, % (bootstrap 95% CI)")
    for header in ("model A", "model B", "n", "win", "tie", "loss", "w/(w+l)", "unusable"):
        results.add_column(header, overflow="fold")
    for pair in summary["pairs"]:
        results.add_row(pair["model_a"], pair["model_b"], str(pair["usable"]), *_rates(pair["result"]),
                        _percent(pair["win_rate_excluding_ties"]), _unusable(pair))
    console.print(results)
    biases = Table(title="biases: the first-shown answer wins (of n verdicts), verdicts on one comparison "
                         "disagree, the longer answer wins (of n comparisons)")
    for header in ("model A", "model B", "first shown wins", "disagree", "longer wins"):
        biases.add_column(header, overflow="fold")
    for pair in summary["pairs"]:
        biases.add_row(pair["model_a"], pair["model_b"], *_bias_cells(pair))
    if len(summary["pairs"]) > 1:
        biases.add_row("all pairs", "", *_bias_cells(summary["bias"]))
    console.print(biases)
    groups = Table(title="by category and turns (win / tie / loss of model A)")
    for header in ("model A", "model B", "group", "n", "win", "tie", "loss"):
        groups.add_column(header, overflow="fold")
    for pair in summary["pairs"]:
        for group, block in [*pair["by_category"].items(), *pair["by_turns"].items()]:
            groups.add_row(pair["model_a"], pair["model_b"], group, str(block["usable"]),
                           *(_percent(block["result"][k]["estimate"]) if block["result"] else "—"
                             for k in ("win", "tie", "loss")))
    console.print(groups)


def _rates(result: dict[str, Any] | None) -> list[str]:
    if result is None:
        return ["—"] * 3
    return [f"{100 * result[k]['estimate']:.1f}\n[{100 * result[k]['low']:.1f}, {100 * result[k]['high']:.1f}]"
            for k in ("win", "tie", "loss")]


def _bias_cells(block: dict[str, Any]) -> list[str]:
    first = block["position"]["first_shown"]
    disagreement = block["position"]["disagreement"]
    length = block["length"]
    longer = length["longer"] if length else None
    return [_percent(first["win"]["estimate"]) + f" ({first['n']})" if first else "—",
            _percent(disagreement["rate"]) + f" ({disagreement['n']})" if disagreement["rate"] is not None else "—",
            _percent(longer["win"]["estimate"]) + f" ({longer['n']})" if longer else "—"]


def _unusable(block: dict[str, Any]) -> str:
    """Comparisons without a usable outcome, and how many verdicts could not be read."""
    unparsed = block["unparsed_verdicts"]
    return f"{block['unusable']}" + (f"\n({unparsed} unparsed)" if unparsed else "")


def _print_agreement(agreement: dict[str, Any]) -> None:
    majority = agreement["majority"]
    print(f"judge vs humans' majority on win/tie/loss ({majority['n_items']} items, {agreement['no_majority']} without "
          f"a majority): exact {_percent(majority['exact'])}, Cohen's kappa ({agreement['weights']}) "
          f"{_interval(majority['cohen_kappa'])}, Gwet's AC2 {_interval(majority['gwet_ac'])}")
    for rater, pair in agreement["per_rater"].items():
        print(f"  vs {rater} ({pair['n_items']} items): exact {_percent(pair['exact'])}, "
              f"kappa {_interval(pair['cohen_kappa'])}, AC2 {_interval(pair['gwet_ac'])}")
    if agreement["among_humans"] is not None:
        print(f"  humans among themselves: Gwet's AC2 {_interval(agreement['among_humans'])}")


def _interval(stat: dict[str, Any]) -> str:
    return f"{stat['estimate']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"
