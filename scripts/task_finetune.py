"""Task fine-tuning, measured: does a LoRA fine-tune close the gap on one task? One command:

    python scripts/task_finetune.py [--tasks math,code] [--run-dir runs/task-finetune] [--seed 0]
                                    [--steps N] [--n-train N] [--n-eval N]

For each task (math: GSM8K-style word problems scored by the gsm8k harness, 2-shot; code: small
Python functions scored by the humaneval harness):

1. generates the training set and the held-out set (`llama2 data build-task TASK`, seeded),
2. scores the bundled chat model on the held-out set (`llama2 eval run`): before,
3. LoRA-fine-tunes it with recipes/task-TASK-lora.yaml (`llama2 train sft`),
4. scores base and fine-tuned model together (`llama2 eval run`, base answers come from the cache),
   with the paired-bootstrap difference: after,

and prints a before/after table, also written to RUN/results.md and RUN/results.json.

The gsm8k harness's 8-shot prompt (~920 tokens) does not fit default-chat's 512-token context, so
math is scored with `--num-fewshot 2`, the most exemplars that fit with a worked answer
(`task_math.NUM_FEWSHOT`); both recipes train with `template: text`, the raw-text continuation the
harnesses ask for.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from common import llama2  # noqa: E402  (scripts/ is a folder of scripts, not a package)

from llama2.atomic import write_text  # noqa: E402
from llama2.data.task_math import NUM_FEWSHOT  # noqa: E402

BASE = "default-chat"


@dataclass(frozen=True)
class Task:
    name: str
    benchmark: str
    eval_options: tuple[str, ...] = ()  # for `llama2 eval run`, e.g. the gsm8k shot count that fits 512 tokens


TASKS = {"math": Task("math", "gsm8k", ("--num-fewshot", str(NUM_FEWSHOT))), "code": Task("code", "humaneval")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="math,code", help="comma-separated: math, code (default both)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "task-finetune")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    parser.add_argument("--steps", type=int, default=None, help="override the recipes' max_steps")
    parser.add_argument("--n-train", type=int, default=None, help="training problems (default: build-task's)")
    parser.add_argument("--n-eval", type=int, default=None, help="held-out problems (default: build-task's)")
    options = parser.parse_args()
    names = [name.strip() for name in options.tasks.split(",") if name.strip()]
    unknown = sorted(set(names) - set(TASKS))
    if unknown or not names:
        parser.error(f"--tasks: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(TASKS)}")

    run_dir, started = options.run_dir, time.perf_counter()
    rows = [measure(TASKS[name], run_dir, options) for name in names]
    seconds = round(time.perf_counter() - started)
    report = {"seed": options.seed, "tasks": rows, "seconds": seconds,
              "command": " ".join(["python", "scripts/task_finetune.py", *sys.argv[1:]])}
    write_text(run_dir / "results.json", json.dumps(report, indent=2) + "\n")
    table = markdown(rows) + f"\n\nAll of it (data, evaluations, training) took {seconds} s."
    write_text(run_dir / "results.md", table + "\n")
    print("\n" + table)


def measure(task: Task, run_dir: Path, options: argparse.Namespace) -> dict:
    """Build, score before, train, score after; the task's row of the report."""
    data = run_dir / "data" / task.name
    build = ["data", "build-task", task.name, "--output", str(data), "--seed", str(options.seed), "--overwrite"]
    build += [f"--n-train={options.n_train}"] if options.n_train else []
    build += [f"--n-eval={options.n_eval}"] if options.n_eval else []
    llama2(*build)
    evaluate = ["eval", "run", "--tasks", task.benchmark, *task.eval_options, "--data-dir", str(data),
                "--output", str(run_dir / "eval")]
    base = f"local:{BASE}"
    before = eval_json(*evaluate, "--model", base)["results"][0]

    output = run_dir / task.name
    shutil.rmtree(output, ignore_errors=True)  # train afresh: a run left by other settings must not be resumed
    overrides = [f"init={BASE}", f"data={data / 'train.jsonl'}", f"output_dir={output}"]
    overrides += [f"max_steps={options.steps}"] if options.steps else []
    started = time.perf_counter()
    llama2("train", "sft", str(ROOT / "recipes" / f"task-{task.name}-lora.yaml"), *overrides)
    train_seconds = time.perf_counter() - started

    after = eval_json(*evaluate, "--model", base, "--model", f"local:{output / 'model'}")  # base answers: cached
    last = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()][-1]
    return {
        "task": task.name, "benchmark": after["results"][0]["task"], "eval_options": list(task.eval_options),
        "models": [_score(before), _score(after["results"][-1])],
        "difference": after["differences"][0] if after["differences"] else None,
        "train": {"steps": last["step"], "final_loss": round(last["loss"], 4), "seconds": round(train_seconds, 1)},
    }


def eval_json(*argv: str) -> dict:
    """Run `llama2 ... --json` (progress on stderr as usual) and return its JSON answer."""
    command = [sys.executable, "-m", "llama2", *argv, "--json"]
    print("$", " ".join(command), flush=True)
    return json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)


def _score(summary: dict) -> dict:
    failures = summary["failures"]
    note = failures["samples"][0]["error"] if failures["count"] else ""
    return {"model": summary["model"], "metric": summary["primary"]["metric"], "estimate": summary["primary"]["estimate"],
            "low": summary["primary"]["low"], "high": summary["primary"]["high"], "scored": summary["n_scored"],
            "samples": summary["n_samples"], "failed": failures["count"], "first_failure": note}


def markdown(rows: list[dict]) -> str:
    lines = ["| task (held-out set) | model | score [95% CI] | scored |", "|---|---|---|---|"]
    for row in rows:
        for model in row["models"]:
            score = "—" if model["estimate"] is None else f"{model['estimate']:.3f} [{model['low']:.3f}, {model['high']:.3f}]"
            scored = f"{model['scored']}/{model['samples']}"
            if model["failed"]:
                scored += f" ({model['failed']} failed: {model['first_failure']})"
            name = model["model"].replace(f"{ROOT}/", "")
            lines.append(f"| {row['task']} ({row['benchmark']} {model['metric']}) | {name} | {score} | {scored} |")
    lines.append("")
    for row in rows:
        d, train = row["difference"], row["train"]
        change = "—"
        if d is not None and d["estimate"] is not None:
            change = f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (paired, n={d['n_paired']})"
        lines.append(f"- {row['task']}: after − before {change}; LoRA fine-tune {train['steps']} steps, "
                     f"final loss {train['final_loss']}, {train['seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
