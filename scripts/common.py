"""Helpers the model-building scripts share: echo and run a command, run `llama2` itself, read a
training run's metrics log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(*argv: str) -> None:
    print("$", " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def llama2(*argv: str) -> None:
    run(sys.executable, "-m", "llama2", *argv)


def read_metrics(run_dir: Path) -> tuple[list[dict], dict]:
    """Every record of `run_dir/metrics.jsonl`, and the last one that carries a validation loss."""
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return metrics, [m for m in metrics if "val_loss" in m][-1]
