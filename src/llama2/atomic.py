"""Atomic saves: everything is written into a hidden temporary sibling, flushed to disk, and renamed
into place only when complete, so an interrupted save never leaves a half-written file or folder
behind (DESIGN.md, "Nothing is lost"). Every layer that writes results uses these."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llama2.errors import OutputExistsError


@contextmanager
def atomic_folder(folder: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `folder`, on any error it is removed."""
    folder = Path(folder)
    _check_target(folder, overwrite, is_dir=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the finished folder private
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                _fsync(path)
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    _check_target(path, overwrite, is_dir=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp's 0600 would make the finished file private
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes, *, overwrite: bool = True) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_file(Path(path), overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path, text: str, *, overwrite: bool = True) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def replace_folder(tmp: Path, folder: Path) -> None:
    """Swap the finished folder `tmp` into `folder`'s place; an existing `folder` is moved aside
    first and deleted last, so at every moment one complete version is on disk."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.replace(folder, old / folder.name)
    os.replace(tmp, folder)
    _fsync_dir(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_target(path: Path, overwrite: bool, *, is_dir: bool) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if is_dir and path.is_dir() and not any(path.iterdir()):
        return
    if is_dir != path.is_dir():
        kind = "a folder" if path.is_dir() else "a file"
        raise OutputExistsError(f"{path}: already exists as {kind}; choose another destination")
    if not overwrite:
        raise OutputExistsError(f"{path}: already exists; choose another destination or allow overwriting it")


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
