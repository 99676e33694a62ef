"""`llama2 eval run`: run benchmarks on one or more models and compare them with bootstrap 95% CIs.

Each model's answers are cached request by request (SQLite), so rerunning a killed command resumes
where it stopped, and a results folder per model and task is written (`summary.json` +
`samples.jsonl`) for reports and later comparisons. With two or more models a table puts them side by
side; with exactly two it adds the paired-bootstrap difference on the samples both answered.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from llama2.cli import eval_pairwise, eval_reward, eval_safety, eval_stats
from llama2.cli.common import print_json

if TYPE_CHECKING:
    from llama2.evaluate.results import TaskResult

DEFAULT_OUTPUT = Path("eval-results")
CACHE_FILE = "cache.sqlite"


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate models on benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)
    run = commands.add_parser("run", help="run benchmarks on one or more models",
                              description="Run benchmarks on one or more models; compare them with bootstrap 95% CIs.")
    run.add_argument("--model", "-m", action="append", required=True, metavar="SPEC",
                     help="model spec, repeatable: local:default, local:/path/to/ckpt, openai:gpt-4o, azure:DEPLOYMENT, "
                          "anthropic:claude-..., http://host:port/v1#model")
    run.add_argument("--tasks", required=True, help="comma-separated benchmark names, e.g. mmlu,gsm8k")
    run.add_argument("--data-dir", default=None,
                     help="parent folder with one subfolder per task (DIR/mmlu, DIR/gsm8k, ...), or one task's own folder; "
                          "default: $LLAMA2_DATA_DIR/<task> or ~/.cache/llama2/data/<task>, where `llama2 data fetch` puts it")
    run.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples of each task (in the task's fixed order)")
    run.add_argument("--num-fewshot", type=int, default=None, metavar="N",
                     help="few-shot exemplars for tasks that take a count (gsm8k: 0-8, default 8 as the paper); "
                          "an error for tasks with a fixed protocol. Recorded in each summary's settings")
    run.add_argument("--output", default=None,
                     help=f"results folder (default ./{DEFAULT_OUTPUT}); OUTPUT/<model>/<task>/summary.json and samples.jsonl")
    run.add_argument("--cache", default=None,
                     help=f"response cache file (default: OUTPUT/{CACHE_FILE} when --output is given, "
                          "else ~/.cache/llama2/eval-cache.sqlite)")
    run.add_argument("--concurrency", type=int, default=None,
                     help="provider calls in flight at once (default: an API model's own concurrency setting, else 8)")
    run.add_argument("--batch-size", type=int, default=None,
                     help="requests per provider call (default: 1 for API models, 256 for local ones, which batch them and share few-shot prefixes within a call)")
    run.add_argument("--json", action="store_true", help="print the summaries (and differences) as JSON")
    run.set_defaults(func=run_eval)
    eval_stats.register(commands)
    eval_pairwise.register(commands)
    eval_safety.register(commands)
    eval_reward.register(commands)


def cache_path(args: argparse.Namespace) -> Path:
    """--cache, else inside --output when given, else the per-user cache shared by every run."""
    from llama2.evaluate.cache import DEFAULT_CACHE_PATH

    if args.cache:
        return Path(args.cache)
    return Path(args.output) / CACHE_FILE if args.output else DEFAULT_CACHE_PATH.expanduser()


def run_eval(args: argparse.Namespace) -> int:
    from llama2.errors import ConfigError
    from llama2.evaluate.runner import evaluate

    tasks = [name.strip() for name in args.tasks.split(",") if name.strip()]
    if not tasks:
        raise ConfigError("--tasks: name at least one benchmark, e.g. --tasks mmlu,gsm8k")
    output = Path(args.output) if args.output else DEFAULT_OUTPUT
    results = asyncio.run(evaluate(
        args.model, tasks, output=output, cache_path=cache_path(args),
        data_dir=Path(args.data_dir) if args.data_dir else None, limit=args.limit,
        concurrency=args.concurrency, batch_size=args.batch_size, progress=True, num_fewshot=args.num_fewshot,
    ))
    differences = _differences(results) if len(args.model) == 2 else []
    if args.json:
        print_json({"results": [result.summary() for result in results], "differences": differences})
        return 0
    _print_human(results, differences, output, len(args.model))
    return 0


def _differences(results: list[TaskResult]) -> list[dict]:
    """Per task, the paired-bootstrap interval of second model minus first on the samples both scored."""
    from llama2.evaluate.stats import paired_difference

    by_task: dict[str, list[TaskResult]] = {}
    for result in results:
        by_task.setdefault(result.task, []).append(result)
    differences = []
    for task, (first, second) in by_task.items():
        if not {s.sample_id for s in first.samples} & {s.sample_id for s in second.samples}:
            continue  # no sample answered by both: nothing to pair
        interval, n = paired_difference(first.samples, second.samples, first.primary_metric)
        differences.append({"task": task, "metric": first.primary_metric, "first": first.spec, "second": second.spec,
                            "n_paired": n, **interval.to_dict()})
    return differences


def _cell(primary: dict, sep: str = " ") -> str:
    if primary["estimate"] is None:
        return "—"
    return f"{primary['estimate']:.3f}{sep}[{primary['low']:.3f}, {primary['high']:.3f}]"


def _print_human(results: list[TaskResult], differences: list[dict], output: Path, n_models: int) -> None:
    summaries = [result.summary() for result in results]
    if n_models == 1:
        for summary in summaries:
            print(_line(summary))
    else:
        _print_table(summaries, differences)
    failed = sum(summary["failures"]["count"] for summary in summaries)
    if failed:
        print(f"{failed} sample(s) failed after retries and were left out; rerun to retry them")
        for summary in summaries:  # the first reason per task: usually one cause explains them all
            if summary["failures"]["samples"]:
                first = summary["failures"]["samples"][0]
                print(f"  {summary['task']} on {summary['model']}, e.g. {first['id']}: {first['error']}")
    print(f"results in {output}/")


def _line(s: dict) -> str:
    cost = f", ${s['usage']['cost_usd']:.4f}" if s["usage"]["cost_usd"] is not None else ""
    return (f"{s['task']}: {s['primary']['metric']} {_cell(s['primary'])} ({s['primary']['estimator']}, 95% CI) "
            f"by {s['mode']}; {s['n_scored']}/{s['n_samples']} samples scored, {s['failures']['count']} failed, "
            f"{s['requests']['cached']}/{s['requests']['unique']} requests cached{cost}")


def _print_table(summaries: list[dict], differences: list[dict]) -> None:
    """Tasks down, models across: primary metric, its 95% CI and the mode; then the paired difference."""
    from rich.console import Console
    from rich.table import Table

    specs = list(dict.fromkeys(s["model"] for s in summaries))
    table = Table(title="bootstrap 95% confidence intervals")
    for header in ["task", "metric", *specs] + ([f"{specs[1]} − {specs[0]} (paired)"] if differences else []):
        table.add_column(header, overflow="fold")
    cells = {(s["task"], s["model"]): s for s in summaries}
    diffs = {d["task"]: d for d in differences}
    for task in dict.fromkeys(s["task"] for s in summaries):
        row = [task, cells[(task, specs[0])]["primary"]["metric"]]
        for spec in specs:
            s = cells[(task, spec)]
            failed = f"\n{s['failures']['count']} failed" if s["failures"]["count"] else ""
            row.append(f"{_cell(s['primary'], sep=chr(10))}\n{s['mode']}{failed}")
        if differences:
            d = diffs.get(task)
            row.append(f"{d['estimate']:+.3f}\n[{d['low']:+.3f}, {d['high']:+.3f}]\nn={d['n_paired']}" if d else "—")
        table.add_row(*row)
    Console(highlight=False).print(table)
