"""One way for the FSDP tests to run `llama2 train RECIPE key=value ...` on two CPU processes under
torchrun (gloo), failing with the end of its stderr."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def train_on_two_processes(recipe: str, settings: Sequence[str], *, timeout: int = 300) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "llama2", "train", recipe, *settings]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
