"""Meta's checkpoint layout (LLAMA2.md §1.6): `params.json` plus `consolidated.NN.pth`, one file per
model-parallel rank, each weight split along the dim fairscale's layer type splits it on."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from llama2.errors import CheckpointError, ConfigError
from llama2.atomic import atomic_folder
from llama2.model.checkpoint.common import (
    StateDict,
    as_state_dict,
    checked_tokenizer,
    check_keys,
    check_state,
    describe_args,
    expected_shapes,
    read_failure,
    read_json_object,
)
from llama2.model.config import ModelArgs
from llama2.model.tokenizer import Tokenizer

PARAMS_FILE = "params.json"
_SHARD_RE = re.compile(r"consolidated\.(\d+)\.pth")
# Buffers some Meta checkpoints carry that the model recomputes (Llama 1's rotary table).
IGNORED_KEYS = frozenset({"rope.freqs"})

# Split dim per weight (fairscale: ParallelEmbedding splits the embedding dim, ColumnParallelLinear
# the output rows, RowParallelLinear the input columns). Names not listed (the norms) are replicated.
_SPLIT_DIMS = {
    "tok_embeddings.weight": 1,
    "attention.wq.weight": 0,
    "attention.wk.weight": 0,
    "attention.wv.weight": 0,
    "attention.wo.weight": 1,
    "feed_forward.w1.weight": 0,
    "feed_forward.w3.weight": 0,
    "feed_forward.w2.weight": 1,
    "output.weight": 0,
}


def split_dim(name: str) -> int | None:
    """The dim `name` is split on across model-parallel shards, or None if every shard holds it whole."""
    suffix = name.split(".", 2)[2] if name.startswith("layers.") else name
    return _SPLIT_DIMS.get(suffix)


def read_params(folder: Path) -> dict:
    return read_json_object(
        folder / PARAMS_FILE, missing="a Meta checkpoint folder needs params.json next to consolidated.*.pth"
    )


def read_meta_args(folder: Path, *, vocab_size: int | None = None) -> ModelArgs:
    """`ModelArgs` from `params.json`; `vocab_size` (the tokenizer's) fills in a `-1`."""
    path = folder / PARAMS_FILE
    params = read_params(folder)
    if params.get("vocab_size", -1) in (-1, None) and vocab_size is None:
        raise CheckpointError(f"{path}: vocab_size is -1 and no tokenizer.model was found in the folder or its parent")
    try:
        return ModelArgs.from_params(params, vocab_size=vocab_size)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path}: {error}") from None


def shard_files(folder: Path) -> list[Path]:
    """`consolidated.00.pth ... consolidated.{N-1}.pth`, checked to be complete."""
    found = {}
    for path in folder.glob("consolidated.*.pth"):
        match = _SHARD_RE.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    if not found:
        raise CheckpointError(f"{folder}: no consolidated.*.pth files")
    count = max(found) + 1
    missing = [f"consolidated.{rank:02d}.pth" for rank in range(count) if rank not in found]
    if missing:
        raise CheckpointError(f"{folder}: model-parallel shards {', '.join(missing)} are missing ({len(found)} of {count} present)")
    return [found[rank] for rank in range(count)]


def read_meta_state(folder: Path, args: ModelArgs) -> StateDict:
    """Merge the model-parallel shards into one Meta-named state dict.

    Files are memory-mapped; a single-shard checkpoint's tensors stay backed by the file, so
    loading never holds two copies. Every shard is checked against `args` before any merge.
    """
    files = shard_files(folder)
    shapes = expected_shapes(args)
    shards = [_load_shard(path) for path in files]
    for path, shard in zip(files, shards):
        for key in IGNORED_KEYS:
            shard.pop(key, None)
        check_keys(shard.keys(), shapes.keys(), path)
        for name, full in shapes.items():
            _check_shard_shape(path, name, shard[name].shape, full, len(files), args)
    if len(shards) == 1:
        return shards[0]
    state = {}
    for name in shapes:
        dim = split_dim(name)
        parts = [shard.pop(name) for shard in shards]
        # A clone even for the (small) replicated norms: nothing then keeps a shard's mapping alive.
        state[name] = parts[0].clone() if dim is None else torch.cat(parts, dim=dim)
    return state


def _load_shard(path: Path) -> StateDict:
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on bad files
        raise read_failure(path, error) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a Meta consolidated.*.pth file)")
    return state


def _check_shard_shape(path: Path, name: str, found: torch.Size, full: torch.Size, n: int, args: ModelArgs) -> None:
    dim = split_dim(name)
    expected = list(full)
    if dim is not None:
        if full[dim] % n:
            raise CheckpointError(f"{path}: {name} of shape {list(full)} cannot be split into {n} shards; is the shard count right?")
        expected[dim] //= n
    if list(found) == expected:
        return
    hint = ""
    if dim is not None and len(found) == len(full) and found[dim] and full[dim] % found[dim] == 0:
        ratio = full[dim] // found[dim]
        if ratio > n and all(f == e for i, (f, e) in enumerate(zip(found, full)) if i != dim):
            hint = f"; it looks like one of {ratio} model-parallel shards, but {n} consolidated.*.pth file(s) are present"
    raise CheckpointError(
        f"{path}: tensor {name} has shape {list(found)}, expected {expected} "
        f"({n} shard(s) of params.json's {describe_args(args)}){hint}"
    )


def save_meta(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    args: ModelArgs,
    folder: str | Path,
    *,
    tokenizer: Tokenizer | str | Path | None = None,
    num_shards: int = 1,
    overwrite: bool = False,
) -> list[Path]:
    """Write a Meta checkpoint folder: `params.json` (with the real vocab_size), `consolidated.NN.pth`
    split into `num_shards` model-parallel ranks, and `tokenizer.model` if a tokenizer is given.
    Tensors keep their dtype and are saved from the CPU. Returns the files written."""
    folder = Path(folder)
    state = as_state_dict(model_or_state)
    check_state(state, args, "state to save")
    _check_splittable(args, num_shards)
    tok = checked_tokenizer(tokenizer, args) if tokenizer is not None else None
    names = ["params.json"] + [f"consolidated.{rank:02d}.pth" for rank in range(num_shards)]
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        (tmp / PARAMS_FILE).write_text(json.dumps(args.to_params(), indent=2) + "\n")
        for rank in range(num_shards):
            shard = {name: _shard_of(tensor, split_dim(name), rank, num_shards) for name, tensor in state.items()}
            torch.save(shard, tmp / f"consolidated.{rank:02d}.pth")
            del shard
        if tok is not None:
            tok.save(tmp / "tokenizer.model")
            names.append("tokenizer.model")
    return [folder / name for name in names]


def _check_splittable(args: ModelArgs, n: int) -> None:
    sizes = {
        "n_heads": args.n_heads,
        "n_kv_heads": args.kv_heads,
        "dim": args.dim,
        "ffn hidden dim": args.ffn_hidden_dim,
        "vocab_size": args.vocab_size,
    }
    bad = [f"{key} {value}" for key, value in sizes.items() if value % n] if n >= 1 else ["num_shards < 1"]
    if bad:
        raise CheckpointError(f"cannot split into {n} model-parallel shards: {', '.join(bad)} not divisible by {n}")


def _shard_of(tensor: torch.Tensor, dim: int | None, rank: int, n: int) -> torch.Tensor:
    """Rank `rank`'s slice as a tensor with its own storage: `torch.save` of a view would write the
    whole underlying storage into every shard."""
    part = tensor.detach().cpu() if dim is None or n == 1 else tensor.detach().chunk(n, dim=dim)[rank].cpu()
    owns_storage = part.is_contiguous() and part.untyped_storage().nbytes() == part.numel() * part.element_size()
    return part if owns_storage else part.clone(memory_format=torch.contiguous_format)
