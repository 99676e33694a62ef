"""Options shared by the commands that generate answers from several models and have a judge read
them (`llama2 eval pairwise`, `llama2 eval safety`): where results are cached, how many calls run at
once, how answers are sampled, how long the judge may write, which system prompt the models see."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llama2.types import SamplingParams


def add_study_options(parser: argparse.ArgumentParser, *, limit_help: str, system_prompt_help: str) -> None:
    parser.add_argument("--cache", default=None, help="response cache file (default ~/.cache/llama2/eval-cache.sqlite)")
    parser.add_argument("--limit", type=int, default=None, help=limit_help)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="provider calls in flight at once (default: an API model's own setting, else 8)")
    parser.add_argument("--batch-size", type=int, default=None, help="requests per provider call (default: 1 for APIs, 256 local)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="answer length limit (default 512)")
    parser.add_argument("--temperature", type=float, default=0.0, help="answer sampling temperature (default 0: greedy)")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=None, help="seed for sampled answers")
    parser.add_argument("--judge-max-new-tokens", type=int, default=512, help="judge answer length limit (default 512)")
    parser.add_argument("--system", default=None, help="system prompt for prompts that have none")
    parser.add_argument("--default-system-prompt", action="store_true", help=system_prompt_help)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


@dataclass(frozen=True)
class StudySettings:
    answer_params: SamplingParams
    judge_params: SamplingParams
    system_prompt: str | None
    cache: Path


def study_settings(args: argparse.Namespace) -> StudySettings:
    """The options above, checked (a ConfigError names the bad one) and resolved."""
    from llama2.errors import ConfigError
    from llama2.evaluate.cache import DEFAULT_CACHE_PATH
    from llama2.evaluate.judge import DEFAULT_JUDGE_PARAMS
    from llama2.model.chat_format import DEFAULT_SYSTEM_PROMPT
    from llama2.types import SamplingParams

    for name in ("max_new_tokens", "judge_max_new_tokens"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    return StudySettings(
        answer_params=SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                     top_p=args.top_p, seed=args.seed),
        judge_params=SamplingParams(**{**vars(DEFAULT_JUDGE_PARAMS), "max_new_tokens": args.judge_max_new_tokens}),
        system_prompt=args.system or (DEFAULT_SYSTEM_PROMPT if args.default_system_prompt else None),
        cache=Path(args.cache) if args.cache else DEFAULT_CACHE_PATH.expanduser())
