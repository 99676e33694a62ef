"""Checkpoints in Meta's, Hugging Face's and llama.cpp's (GGUF) formats.

Reading: `detect_format`, `read_model_args`, `find_tokenizer`, `load_state`, `load_transformer`.
Writing (atomically): `save_meta`, `save_hf`, `export_gguf`. Names: `resolve_model_path`.
Every problem with a file is a one-line `llama2.errors.CheckpointError` naming it.
"""

from llama2.model.checkpoint.common import DTYPES, StateDict, as_dtype
from llama2.model.checkpoint.gguf_io import GGUF_DTYPES, export_gguf
from llama2.model.checkpoint.hf import save_hf
from llama2.model.checkpoint.loading import (
    BUNDLED_MODELS,
    Format,
    bundled_model_path,
    detect_format,
    find_tokenizer,
    load_state,
    load_transformer,
    read_model_args,
    resolve_model_path,
)
from llama2.model.checkpoint.meta import save_meta

__all__ = [
    "BUNDLED_MODELS",
    "DTYPES",
    "GGUF_DTYPES",
    "Format",
    "StateDict",
    "as_dtype",
    "bundled_model_path",
    "detect_format",
    "export_gguf",
    "find_tokenizer",
    "load_state",
    "load_transformer",
    "read_model_args",
    "resolve_model_path",
    "save_hf",
    "save_meta",
]
