"""Task fine-tuning data: a generated training set and a held-out set in a benchmark's own layout.

    llama2 data build-task math --output DIR   # DIR/train.jsonl, DIR/gsm8k/test.jsonl, DIR/task.json
    llama2 data build-task code --output DIR   # DIR/train.jsonl, DIR/humaneval/HumanEval.jsonl, DIR/task.json

Fine-tuning on one's own task (SFT as LLAMA2.md §3, usually through LoRA) is judged by the task's
score before and after. Here both halves come from one seeded generator
(`task_math`: GSM8K-style word problems; `task_code`: small Python functions with tests), so
`llama2 eval run --tasks gsm8k|humaneval --data-dir DIR` measures exactly the task that
`llama2 train sft recipes/task-*-lora.yaml` trains, on problems it never saw: the held-out split is
decided by each problem's key (`chat_tasks.is_heldout_key`), and held-out keys are distinct.

Training records are plain SFT prompt/completion pairs: the prompt exactly as the benchmark sends it
to a local model (a GSM8K "Q: ...\nA:" prompt, a function's signature and docstring) and the
completion that should follow it. The recipes train them with `template: text`
(`BOS prompt completion EOS`, the loss on the completion), since the benchmarks ask a local model to
continue raw text, which never shows the chat template's `[INST]`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama2.atomic import atomic_folder
from llama2.data import task_code, task_math
from llama2.errors import ConfigError, DataError

__all__ = ["TaskSpec", "TASKS", "TaskData", "build_task", "write_task", "MANIFEST", "TRAIN_FILE"]

TRAIN_FILE = "train.jsonl"
MANIFEST = "task.json"
# Draws in a row that bring no new held-out key before concluding that the pool is used up.
_MAX_MISSES = 2000

Prompt = Callable[[str], str]


@dataclass(frozen=True)
class TaskSpec:
    """A generated task: its problems, the benchmark that scores it and where that benchmark reads
    its data (`benchmark/eval_file` under the output folder)."""

    name: str
    benchmark: str
    eval_file: str
    generate: Callable[[random.Random, bool], Any]
    eval_record: Callable[[Any, int], dict[str, str]]
    train_pair: Callable[[Any, Prompt | None], tuple[str, str]]
    default_train: int
    default_eval: int


TASKS: dict[str, TaskSpec] = {
    "math": TaskSpec("math", "gsm8k", "test.jsonl", task_math.generate_problem,
                     lambda problem, index: task_math.gsm8k_record(problem),
                     task_math.train_pair, default_train=3000, default_eval=100),
    "code": TaskSpec("code", "humaneval", "HumanEval.jsonl", task_code.generate_problem, task_code.humaneval_record,
                     task_code.train_pair, default_train=2000, default_eval=80),
}


@dataclass(frozen=True)
class TaskData:
    """Generated records: `train` (SFT prompt/completion; `prompted` of them through the caller's
    prompt) and `heldout` (the benchmark's records), with the keys of each, so tests and
    callers can check that they are disjoint."""

    spec: TaskSpec
    train: list[dict[str, str]]
    heldout: list[dict[str, str]]
    train_keys: list[str]
    heldout_keys: list[str]
    prompted: int


def build_task(name: str, *, n_train: int | None = None, n_eval: int | None = None, seed: int = 0,
               prompt: Prompt | None = None, prompt_share: float = 1.0) -> TaskData:
    """`n_train` training and `n_eval` held-out problems of task `name`, the same for the same seed.

    `prompt` turns a problem's own prompt (a math question, a code signature and docstring) into
    the text the model is given, for a seeded `prompt_share` of the training problems; the others,
    and all of them without `prompt`, keep the task's plain form (see `task_math.train_pair`,
    `task_code.train_pair`). A long few-shot prompt on a share only teaches its shape, while the
    short plain form gives many more problems for the same compute. Held-out problems have
    distinct keys; asking for more than the pool holds raises a DataError.
    """
    spec = spec_for(name)
    n_train = spec.default_train if n_train is None else n_train
    n_eval = spec.default_eval if n_eval is None else n_eval
    if n_train < 1 or n_eval < 1:
        raise ConfigError(f"--n-train and --n-eval must be at least 1, got {n_train} and {n_eval}")
    if not 0.0 <= prompt_share <= 1.0:
        raise ConfigError(f"the prompt share must lie in [0, 1], got {prompt_share}")
    heldout = _distinct_heldout(spec, n_eval, random.Random(f"llama2-task:{name}:{seed}:heldout"))
    rng = random.Random(f"llama2-task:{name}:{seed}:train")
    train = [spec.generate(rng, False) for _ in range(n_train)]
    pick = random.Random(f"llama2-task:{name}:{seed}:prompt")
    prompts = [prompt if pick.random() < prompt_share else None for _ in train]
    return TaskData(
        spec,
        train=[_record(*spec.train_pair(problem, p)) for problem, p in zip(train, prompts)],
        heldout=[spec.eval_record(problem, i) for i, problem in enumerate(heldout)],
        train_keys=[problem.key for problem in train],
        heldout_keys=[problem.key for problem in heldout],
        prompted=sum(p is not None for p in prompts),
    )


def write_task(name: str, output: str | Path, *, n_train: int | None = None, n_eval: int | None = None,
               seed: int = 0, prompt: Prompt | None = None, prompt_share: float = 1.0,
               overwrite: bool = False) -> dict[str, Any]:
    """Write `build_task(...)` into the folder `output` (atomically) and return its manifest:
    OUTPUT/train.jsonl, OUTPUT/<benchmark>/<file> and OUTPUT/task.json (the manifest)."""
    data = build_task(name, n_train=n_train, n_eval=n_eval, seed=seed, prompt=prompt, prompt_share=prompt_share)
    spec, output = data.spec, Path(output).expanduser()
    manifest = {"task": spec.name, "benchmark": spec.benchmark, "seed": seed, "train": len(data.train),
                "train_prompted": data.prompted,
                "heldout": len(data.heldout), "train_file": TRAIN_FILE, "eval_file": f"{spec.benchmark}/{spec.eval_file}"}
    with atomic_folder(output, overwrite=overwrite) as tmp:
        _write_jsonl(tmp / TRAIN_FILE, data.train)
        (tmp / spec.benchmark).mkdir()
        _write_jsonl(tmp / spec.benchmark / spec.eval_file, data.heldout)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _record(prompt: str, completion: str) -> dict[str, str]:
    return {"prompt": prompt, "completion": completion}


def spec_for(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]


def _distinct_heldout(spec: TaskSpec, count: int, rng: random.Random) -> list[Any]:
    problems, seen, misses = [], set(), 0
    while len(problems) < count and misses < _MAX_MISSES:
        problem = spec.generate(rng, True)
        if problem.key in seen:
            misses += 1
            continue
        seen.add(problem.key)
        problems.append(problem)
        misses = 0
    if len(problems) < count:
        raise DataError(f"the {spec.name} task has only {len(problems)} distinct held-out problems for the {count} "
                        f"asked; lower --n-eval")
    return problems


def _write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
