"""One entry point over the three formats: find out what a path holds, read its `ModelArgs`, and
load a `Transformer` without ever holding two copies of the weights (build on the `meta` device,
memory-map the files, `load_state_dict(assign=True)`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from llama2.errors import CheckpointError, UnknownModelError
from llama2.model.checkpoint import gguf_io, hf, meta
from llama2.model.checkpoint.common import StateDict, as_dtype, cast_state
from llama2.model.config import PRESETS, ModelArgs
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer

Format = Literal["meta", "hf", "gguf"]
TOKENIZER_FILE = "tokenizer.model"


BUNDLED_DIR = Path(__file__).resolve().parents[2] / "assets"
BUNDLED_MODELS = ("default", "default-chat")  # the base model and its SFT chat model


def bundled_model_path(name: str) -> Path | None:
    """The folder of a model shipped inside the package, if `name` is one and it is installed."""
    path = BUNDLED_DIR / name
    return path if name in BUNDLED_MODELS and path.is_dir() else None


def resolve_model_path(name: str | os.PathLike) -> Path:
    """A model name as a user writes it -> the checkpoint path to load.

    A name is a bundled model (`default`), or a path (`~` expanded) to a Meta or HF folder or a
    .gguf file, so every caller accepts the same names. (Presets are not paths: callers that can
    build random weights check `PRESETS` first.)
    """
    bundled = bundled_model_path(os.fspath(name))
    if bundled is not None:
        return bundled
    if os.fspath(name) in BUNDLED_MODELS:
        raise UnknownModelError(f"the bundled model {os.fspath(name)!r} is not installed in this package; give a checkpoint path")
    path = Path(name).expanduser()
    if not path.exists():
        raise UnknownModelError(
            f"{os.fspath(name)!r} is not a bundled model ({', '.join(BUNDLED_MODELS)}), a preset "
            f"({', '.join(PRESETS)}) or a checkpoint folder or .gguf file that exists"
        )
    return path


def detect_format(path: str | os.PathLike) -> Format:
    """"meta" (params.json + consolidated.*.pth), "hf" (config.json + *.safetensors) or "gguf"."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        raise CheckpointError(f"{path}: not a checkpoint; expected a .gguf file or a Meta or Hugging Face folder")
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such file or folder")
    if any(path.glob("consolidated.*.pth")) or (path / meta.PARAMS_FILE).exists():
        return "meta"
    if (path / hf.CONFIG_FILE).exists() or any(path.glob("*.safetensors")):
        return "hf"
    raise CheckpointError(
        f"{path}: not a checkpoint folder; expected params.json + consolidated.*.pth (Meta) "
        "or config.json + *.safetensors (Hugging Face)"
    )


def find_tokenizer(path: str | os.PathLike) -> Path | None:
    """The tokenizer that belongs to a checkpoint: tokenizer.model in the folder, or (Meta's download
    layout, one tokenizer above the model folders) in its parent; a GGUF file carries its own."""
    path = Path(path)
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    candidates = [path / TOKENIZER_FILE]
    if detect_format(path) == "meta":
        candidates.append(path.parent / TOKENIZER_FILE)
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def read_model_args(path: str | os.PathLike) -> ModelArgs:
    """The model's shape, checked against its tokenizer when one is found (the tokenizer may have
    fewer pieces than embedding rows, as padded vocabularies do, but never more)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "gguf":
        return gguf_io.read_gguf_args(path)  # its vocabulary is padded to the embedding on export
    tokenizer_path = find_tokenizer(path)
    n_words = Tokenizer(tokenizer_path).n_words if tokenizer_path is not None else None
    if fmt == "meta":
        args = meta.read_meta_args(path, vocab_size=n_words)
        source = path / meta.PARAMS_FILE
    else:
        source = path / hf.CONFIG_FILE
        args = hf.args_from_hf_config(hf.read_config(path), source)
    if n_words is not None and n_words > args.vocab_size:
        raise CheckpointError(
            f"{tokenizer_path}: the tokenizer has {n_words} pieces but {source} gives the model "
            f"{args.vocab_size} embedding rows; use the tokenizer this checkpoint was trained with"
        )
    return args


def load_state(path: str | os.PathLike, args: ModelArgs | None = None) -> tuple[ModelArgs, StateDict]:
    """`(args, state)`: the checkpoint's tensors in Meta names and layout, in the file's dtype,
    checked against `args` (read from the checkpoint when not given)."""
    path = Path(path)
    args = args or read_model_args(path)
    readers = {"meta": meta.read_meta_state, "hf": hf.read_hf_state, "gguf": gguf_io.read_gguf_state}
    return args, readers[detect_format(path)](path, args)


def load_transformer(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
) -> Transformer:
    """A `Transformer` with the checkpoint's weights, in `dtype` (a torch dtype or a name such as
    "bf16" or "bfloat16"; default: the checkpoint's) on `device` (default: CPU). The model is built on the `meta` device and the loaded tensors become
    its parameters, so peak memory is one copy of the weights."""
    dtype = as_dtype(dtype)
    args, state = load_state(path)
    state = cast_state(state, dtype)
    with torch.device("meta"):
        model = Transformer(args)
    model.load_state_dict(state, assign=True, strict=True)
    del state
    return model.to(device) if device is not None else model
