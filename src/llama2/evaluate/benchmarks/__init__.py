"""Benchmarks as `Task`s (see `base.Task`), by name.

`BENCHMARKS` maps the names `--tasks` accepts to task factories; `get_task` also understands
`evals:PATH#...` (an eval in the OpenAI evals format, see `openai_evals`). Data lives in
`$LLAMA2_DATA_DIR/<name>`, else `~/.cache/llama2/data/<name>`, where `llama2 data fetch <name>`
puts it; `data_dir_for` resolves a `--data-dir` the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from llama2.errors import ConfigError
from llama2.evaluate.benchmarks.base import Task

DATA_DIR_ENV = "LLAMA2_DATA_DIR"


def _mmlu() -> Task:
    from llama2.evaluate.benchmarks.mmlu import MMLU

    return MMLU()


def _gsm8k(num_fewshot: int | None = None) -> Task:
    from llama2.evaluate.benchmarks.gsm8k import GSM8K

    return GSM8K() if num_fewshot is None else GSM8K(num_fewshot)


def _bbh() -> Task:
    from llama2.evaluate.benchmarks.bbh import BBH

    return BBH()


def _humaneval() -> Task:
    from llama2.evaluate.benchmarks.humaneval import HumanEval

    return HumanEval()


BENCHMARKS: dict[str, Callable[[], Task]] = {"mmlu": _mmlu, "gsm8k": _gsm8k, "bbh": _bbh, "humaneval": _humaneval}
# Tasks whose number of few-shot exemplars can be chosen (`num_fewshot`); the others keep the
# paper's fixed protocol (MMLU 5-shot, BBH 3-shot, HumanEval 0-shot).
FEWSHOT_TASKS: dict[str, Callable[[int], Task]] = {"gsm8k": _gsm8k}


def get_task(name: str, *, num_fewshot: int | None = None) -> Task:
    """A fresh task for `name`: a key of BENCHMARKS or `evals:PATH.yaml#EVAL` / `evals:PATH.jsonl#GRADER`.
    `num_fewshot`, when given, sets the exemplar count of a task in FEWSHOT_TASKS; for any other it
    is a ConfigError."""
    if num_fewshot is not None and name not in FEWSHOT_TASKS:
        raise ConfigError(f"--num-fewshot applies to {', '.join(FEWSHOT_TASKS)} only; {name!r} keeps its fixed "
                          "protocol: run it in a separate `llama2 eval run` without --num-fewshot")
    if name.startswith("evals:"):
        from llama2.evaluate.benchmarks.openai_evals import OpenAIEval

        return OpenAIEval(name)
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown task {name!r}; choose from {', '.join(BENCHMARKS)} or evals:PATH/TO/eval.yaml#EVAL")
    if num_fewshot is not None:
        return FEWSHOT_TASKS[name](num_fewshot)
    return BENCHMARKS[name]()


def data_root() -> Path:
    """Where fetched benchmark data lives: $LLAMA2_DATA_DIR, else ~/.cache/llama2/data."""
    root = os.environ.get(DATA_DIR_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "llama2" / "data"


def default_data_dir(name: str) -> Path:
    return data_root() / name


def data_dir_for(name: str, data_dir: Path | str | None = None) -> Path:
    """The folder a task reads: with `--data-dir DIR`, `DIR/<name>` when that exists (one DIR for
    several tasks), else DIR itself; without it, the default. `evals:` tasks name their own files and
    get the folder of their spec file."""
    if name.startswith("evals:"):
        return Path(name.removeprefix("evals:").partition("#")[0]).expanduser().parent
    if data_dir is None:
        return default_data_dir(name)
    data_dir = Path(data_dir).expanduser()
    return data_dir / name if (data_dir / name).is_dir() else data_dir
