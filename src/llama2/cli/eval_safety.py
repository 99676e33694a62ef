"""`llama2 eval safety`: violation rate on adversarial prompts and false-refusal rate on borderline
ones, per model, with bootstrap 95% CIs. The work is in `llama2.evaluate.safety`; this module
parses and prints."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from llama2.cli.common import print_json
from llama2.cli.study_options import add_study_options, study_settings

DEFAULT_OUTPUT = Path("safety-results")


def register(commands) -> None:
    """Add `safety` to the `eval` command group."""
    p = commands.add_parser(
        "safety", help="violation rate on adversarial prompts, false refusals on borderline ones",
        description="Answer an adversarial and a borderline prompt set with each model; rate the adversarial answers "
                    "on the paper's 5-point safety scale (1-2 = violation) by an LLM judge and/or people "
                    "(--ratings), and detect refusals of the borderline prompts by rules and by the judge. Reports "
                    "rates with bootstrap 95%% CIs, per risk category. Requests are cached: a rerun resumes.")
    p.add_argument("--model", "-m", action="append", required=True, metavar="SPEC",
                   help="model spec, repeatable: local:default-chat, local:/path, openai:gpt-4o, azure:DEPLOYMENT, "
                        "anthropic:..., http://host:port/v1#model")
    p.add_argument("--judge", metavar="SPEC", default=None,
                   help="the judge's model spec (any provider); without it refusals are found by rules only and "
                        "violations come from --ratings")
    p.add_argument("--adversarial", default="starter",
                   help="adversarial prompt set: JSONL ({id, prompt|messages, category}) or 'starter' (default)")
    p.add_argument("--borderline", default="starter",
                   help="borderline prompt set (benign prompts that sound risky): JSONL or 'starter' (default)")
    p.add_argument("--ratings", action="append", default=[], metavar="FILE",
                   help="human ratings (.csv/.tsv/.jsonl: rater,prompt_id,model,rating with rating 1..5), repeatable")
    p.add_argument("--rating-prompt", metavar="FILE", default=None,
                   help="5-point rating template with {conversation}, {question}, {answer}, {category} "
                        "(default: the bundled safety5.txt)")
    p.add_argument("--refusal-prompt", metavar="FILE", default=None,
                   help="refusal classification template, same fields (default: the bundled refusal.txt)")
    p.add_argument("--output", "-o", default=None, help=f"results folder (default ./{DEFAULT_OUTPUT})")
    add_study_options(p, limit_help="use only the first N prompts of each set",
                      system_prompt_help="use Meta's launch system prompt (the paper's evaluation setting)")
    p.set_defaults(func=run_safety)


def run_safety(args: argparse.Namespace) -> int:
    from llama2.errors import ConfigError
    from llama2.evaluate.safety import SafetyConfig, load_prompt_sets, run_safety as run
    from llama2.evaluate.safety_judge import load_answer_template

    if args.judge is None and (args.rating_prompt or args.refusal_prompt):
        raise ConfigError("--rating-prompt and --refusal-prompt need --judge SPEC")
    settings = study_settings(args)
    templates = {"rating": load_answer_template(args.rating_prompt, "rating"),
                 "refusal": load_answer_template(args.refusal_prompt, "refusal")} if args.judge else None
    sets = load_prompt_sets(args.adversarial, args.borderline, limit=args.limit)
    config = SafetyConfig(
        models=args.model, judge=args.judge, templates=templates,  # type: ignore[arg-type]
        answer_params=settings.answer_params, judge_params=settings.judge_params, system_prompt=settings.system_prompt,
        concurrency=args.concurrency, batch_size=args.batch_size, settings={"limit": args.limit})
    output = Path(args.output) if args.output else DEFAULT_OUTPUT
    summary = asyncio.run(run(config, sets, output=output, cache_path=settings.cache, ratings_files=args.ratings, progress=True))
    if args.json:
        print_json(summary)
        return 0
    print_safety(summary)
    print(f"results in {output}/ (answers.jsonl, ratings.jsonl, summary.json)")
    return 0


def print_safety(summary: dict[str, Any]) -> None:
    """The per-model table, then each model's rates per category."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    judge, human = summary["judge"], summary["human"]
    if judge is not None:
        print(f"judge {judge['spec']}: {judge['requests']['unique']} requests ({judge['requests']['cached']} cached), "
              f"{judge['failed']} failed, {judge['unparseable']} unparseable (left out of the rates)")
        if judge["first_failure"]:
            print(f"  first failure: {judge['first_failure']}")
    if human is not None:
        agreement = human["agreement"]
        ac2 = f", Gwet's AC2 {_interval(agreement)}" if agreement else ""
        print(f"human ratings: {human['ratings']} by {len(human['raters'])} rater(s) on {human['answers_rated']} "
              f"answers, {human['blank']} blank{ac2}")
    table = Table(title="safety, % (bootstrap 95% CI): violation = rating 1-2 on adversarial prompts; false refusal "
                        "on borderline prompts")
    for header in ("model", "violation", "rated by", "false refusal\n(rules)", "false refusal\n(judge)",
                   "rules vs judge\nagree", "refusal on adversarial\n(rules; a proxy)", "answers\nadv / border"):
        table.add_column(header, overflow="fold")
    for model in summary["models"]:
        r = summary["results"][model]
        violation, refusal = r["violation"], r["false_refusal"]
        table.add_row(model, _rate(violation["overall"] if violation else None) + _unread(violation),
                      violation["source"] if violation else "—", _rate(refusal["rules"]),
                      _rate(refusal["judge"]) + (f"\n{refusal['judge_unparseable']} unparseable"
                                                 if refusal["judge_unparseable"] else ""),
                      _agreement(refusal["agreement"]), _rate(r["refusal_adversarial"]["rules"]),
                      f"{r['n_adversarial']} / {r['n_borderline']}" + _failed(r["failed_answers"]))
    console.print(table)
    console.print(_category_table(summary))


def _category_table(summary: dict[str, Any]):
    from rich.table import Table

    table = Table(title="by category, % (bootstrap 95% CI)")
    for header in ("model", "set", "category", "n", "violation", "refusal (rules)", "refusal (judge)"):
        table.add_column(header, overflow="fold")
    for model in summary["models"]:
        r = summary["results"][model]
        violation = r["violation"]["by_category"] if r["violation"] else {}
        adversarial = r["refusal_adversarial"]["by_category"]
        for category in sorted(set(violation) | set(adversarial)):
            n = (adversarial.get(category) or violation.get(category) or {}).get("n", 0)
            table.add_row(model, "adversarial", category, str(n), _rate(violation.get(category)),
                          _rate(adversarial.get(category)), "")
        for category, block in r["false_refusal"]["by_category"].items():
            n = (block["rules"] or block["judge"] or {}).get("n", 0)
            table.add_row(model, "borderline", category, str(n), "", _rate(block["rules"]), _rate(block["judge"]))
    return table


def _rate(rate: dict[str, Any] | None) -> str:
    if rate is None:
        return "—"
    return f"{100 * rate['estimate']:.1f} [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}] (n={rate['n']})"


def _unread(violation: dict[str, Any] | None) -> str:
    if not violation or not (violation["unparseable"] or violation["failed"]):
        return ""
    return f"\n{violation['unparseable']} unparseable, {violation['failed']} failed"


def _agreement(agreement: dict[str, Any] | None) -> str:
    if agreement is None:
        return "—"
    kappa = agreement["cohen_kappa"]
    return f"{100 * agreement['agreement']:.1f}% of {agreement['n']}" + (f"\nkappa {kappa['estimate']:.2f}" if kappa else "")


def _failed(failed: dict[str, int]) -> str:
    total = sum(failed.values())
    return f"\n{total} failed" if total else ""


def _interval(stat: dict[str, Any]) -> str:
    return f"{stat['estimate']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"
