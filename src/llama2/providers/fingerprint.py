"""Short fingerprints of model weights, so cached answers never cross from one model to another.

A checkpoint on disk is fingerprinted by its files' names, sizes and modification times plus the
bytes of its small config files (cheap: the weights are not read); a model built in memory (a
preset with random weights) by the bytes of its tensors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from llama2.model.tokenizer import Tokenizer

DIGEST_BYTES = 6  # 12 hex digits
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_SMALL = 1 << 20


def checkpoint_fingerprint(path: Path) -> str:
    """Hex digest of a checkpoint file or folder (every file under it)."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        name = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        if file.suffix in _CONFIG_SUFFIXES and stat.st_size <= _SMALL:
            digest.update(file.read_bytes())
    return digest.hexdigest()


def weights_fingerprint(model: torch.nn.Module, tokenizer: Tokenizer | None = None) -> str:
    """Hex digest of every parameter's name, dtype and bytes (and the tokenizer, if any)."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())
    if tokenizer is not None:
        digest.update(tokenizer.model_proto)
    return digest.hexdigest()
