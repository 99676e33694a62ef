"""Training checkpoints: written atomically, the last K kept, loadable with or without FSDP.

Layout of `OUTPUT_DIR/checkpoints/step-00000050/`:

    consolidated.00.pth full (unsharded) fp32 weights under the model's own names — Meta's for the
                        transformer — and the recipe's `export` hook adds params.json and
                        tokenizer.model, so the folder is also a Meta checkpoint that
                        `llama2.model.checkpoint.load_transformer` and Meta's own code load
    optimizer.pt        full AdamW state keyed by parameter name (`torch.load(weights_only=True)`)
    trainer.json        format, step, tokens seen, world size, the recipe's data position, the config
    rng-rank<R>.pt      each rank's torch / CUDA / numpy / python RNG states

A checkpoint is assembled in a hidden temporary folder and renamed into place, so a folder named
`step-*` is always complete; a run killed mid-save leaves only a `.tmp-*` folder, removed later.
Under FSDP the weights and optimizer state are gathered to rank 0 (`full_state_dict=True`,
`cpu_offload=True`) and scattered back on load, so any number of processes can resume them.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from llama2.errors import CheckpointError
from llama2.train.distributed import Runtime, barrier, broadcast_object

FORMAT = "llama2-train/1"
MODEL_FILE = "consolidated.00.pth"
OPTIMIZER_FILE = "optimizer.pt"
TRAINER_FILE = "trainer.json"
_PREFIX = "step-"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest step first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def full_model_state(model: nn.Module, runtime: Runtime) -> dict[str, torch.Tensor]:
    """Unsharded weights on the CPU — on rank 0; other ranks get `{}` (every rank must call this)."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return state if runtime.is_main else {}


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], runtime: Runtime) -> None:
    """Load a full state dict (present on rank 0 under FSDP; others pass `{}`) into `model`.

    Every key must match: a missing or unexpected tensor is a `CheckpointError`, not a silent skip.
    """
    if runtime.is_main:
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            detail = f"missing {', '.join(missing[:4])}" if missing else f"unexpected {', '.join(unexpected[:4])}"
            problem = f"weights do not match the model ({detail}); check that the checkpoint was made for this model shape"
        else:
            problem = None
    else:
        problem = None
    problem = broadcast_object(problem, runtime)
    if problem:
        raise CheckpointError(problem)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=runtime.distributed, strict=True)
    set_model_state_dict(model, state, options=options)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    runtime: Runtime,
    keep_last: int,
    export: Callable[[Path], None] | None = None,
) -> Path:
    """Write checkpoint `step` under `root` (collective under FSDP); returns its folder."""
    final = root / f"{_PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}"
    if runtime.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(runtime)
    torch.save(capture_rng(), tmp / f"rng-rank{runtime.rank}.pt")
    weights = full_model_state(model, runtime)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=options)
    if runtime.is_main:
        torch.save(weights, tmp / MODEL_FILE)
        torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
        state = {"format": FORMAT, "step": step, "world_size": runtime.world_size, **trainer_state}
        (tmp / TRAINER_FILE).write_text(json.dumps(state, indent=2) + "\n")
        if export is not None:
            export(tmp)
    barrier(runtime)
    if runtime.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in checkpoint_dirs(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(runtime)
    return final


def remove_partial(root: Path, runtime: Runtime) -> None:
    """Delete `.tmp-*` folders left by a run killed while saving."""
    if runtime.is_main and root.is_dir():
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier(runtime)


def read_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer.json of checkpoint folder `path`, checked for format."""
    file = path / TRAINER_FILE
    try:
        state = json.loads(file.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"{path} is not a training checkpoint (no {TRAINER_FILE}); resume from a checkpoints/step-* folder") from error
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file} is unreadable ({error}); resume from another checkpoint") from error
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{file} has format {state.get('format')!r}, expected {FORMAT!r}")
    return state


def load_checkpoint(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime) -> dict[str, Any]:
    """Restore weights, optimizer state and this rank's RNG from `path`; returns its trainer state."""
    state = read_trainer_state(path)
    weights = read_weights(path / MODEL_FILE) if runtime.is_main else {}
    load_model_state(model, weights, runtime)
    optimizer_state = _read_optimizer(path / OPTIMIZER_FILE) if runtime.is_main else {}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=runtime.distributed)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
    rng_file = path / f"rng-rank{runtime.rank}.pt"
    restore_rng(torch.load(rng_file if rng_file.exists() else path / "rng-rank0.pt", weights_only=True))
    return state


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's full weights, memory-mapped from the file."""
    try:
        return torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        raise CheckpointError(f"cannot read weights {file} ({error}); the checkpoint is damaged or incomplete") from error


def _read_optimizer(file: Path) -> dict[str, Any]:
    try:
        return torch.load(file, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError) as error:
        raise CheckpointError(f"cannot read optimizer state {file} ({error}); the checkpoint is damaged or incomplete") from error


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (loadable with `weights_only=True`)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": python_gauss},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"].tolist()), python_state["gauss"]))
